"""OCI platforms (os/architecture/variant) as the LLB SDK uses them."""

from __future__ import annotations

import platform as _stdlib_platform
from dataclasses import dataclass

from bkcore.errors import DefinitionError

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform such as ``linux/amd64`` or ``linux/arm/v7``.

    Values are normalised like containerd's ``platforms.Normalize`` (``x86_64`` -> ``amd64``,
    ``arm64/v8`` -> ``arm64``), so equal platforms encode to equal bytes.
    """

    os: str
    architecture: str
    variant: str = ""

    def __post_init__(self) -> None:
        os_ = self.os.lower()
        arch = self.architecture.lower()
        variant = self.variant.lower()
        arch = _ARCH_ALIASES.get(arch, arch)
        if arch == "arm64" and variant in ("8", "v8"):
            variant = ""
        elif arch == "arm" and variant in ("", "7"):
            variant = "v7"
        elif arch == "arm" and variant in ("5", "6", "8"):
            variant = "v" + variant
        if not os_ or not arch:
            raise DefinitionError(f"invalid platform {self.os}/{self.architecture}: empty part")
        object.__setattr__(self, "os", os_)
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "variant", variant)

    @classmethod
    def parse(cls, spec: str) -> Platform:
        """Parse ``os/arch[/variant]`` (the form ``docker --platform`` takes)."""
        parts = spec.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise DefinitionError(f"invalid platform {spec!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine (the Go client's default platform), always Linux."""
        machine = _stdlib_platform.machine().lower() or "amd64"
        if machine.startswith("armv") and machine[4:5].isdigit():  # armv7l, armv6l
            return cls("linux", "arm", "v" + machine[4])
        return cls("linux", machine)

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


LINUX_AMD64 = Platform("linux", "amd64")
LINUX_ARM64 = Platform("linux", "arm64")
LINUX_ARMHF = Platform("linux", "arm", "v7")
LINUX_S390X = Platform("linux", "s390x")
LINUX_PPC64LE = Platform("linux", "ppc64le")
