"""Target and build platforms, and the automatic platform ARGs (BuildKit ``platform.go``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bkcore import llb
from bkcore.errors import BkError

__all__ = ["PlatformOpt", "auto_detect_platform", "parse_platform", "platform_args"]


def parse_platform(text: str) -> llb.Platform:
    """``linux/amd64``, ``linux/arm/v7``, ``amd64`` (OS defaults to linux) or ``linux``
    (the architecture of this machine), like containerd's ``platforms.Parse``."""
    parts = text.strip().split("/")
    if any(p == "" for p in parts) or len(parts) > 3:
        raise ValueError(f"{text!r}: invalid platform")
    if len(parts) == 1:
        word = parts[0].lower()
        if word in ("linux", "windows", "darwin", "freebsd"):
            host = llb.Platform.host()
            return llb.Platform(word, host.architecture, host.variant)
        return llb.Platform("linux", word)
    try:
        return llb.Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")
    except BkError as exc:
        raise ValueError(f"{text!r}: invalid platform") from exc


@dataclass(frozen=True)
class PlatformOpt:
    """The platform a build targets and those it runs on (``buildPlatformOpt``).

    ``implicit_target``: no target platform was asked for; the build platform is used and a
    base image of another platform may set the stage's platform (``autoDetectPlatform``).
    """

    target: llb.Platform
    build_platforms: tuple[llb.Platform, ...]
    implicit_target: bool

    @classmethod
    def make(cls, target: str | None, build_platforms: Sequence[str]) -> PlatformOpt:
        builds = tuple(parse_platform(p) for p in build_platforms)
        tp = parse_platform(target) if target else None
        if tp is not None and not builds:
            builds = (tp,)
        if not builds:
            builds = (llb.Platform.host(),)
        if tp is None:
            return cls(builds[0], builds, True)
        return cls(tp, builds, False)

    @property
    def build(self) -> llb.Platform:
        return self.build_platforms[0]


def platform_args(po: PlatformOpt) -> dict[str, str]:
    """The automatic ARGs: ``BUILDPLATFORM``, ``BUILDOS``... ``TARGETVARIANT``."""
    bp, tp = po.build, po.target
    return {
        "BUILDPLATFORM": str(bp),
        "BUILDOS": bp.os,
        "BUILDARCH": bp.architecture,
        "BUILDVARIANT": bp.variant,
        "TARGETPLATFORM": str(tp),
        "TARGETOS": tp.os,
        "TARGETARCH": tp.architecture,
        "TARGETVARIANT": tp.variant,
    }


def auto_detect_platform(
    os_: str, arch: str, target: llb.Platform, supported: Sequence[llb.Platform]
) -> llb.Platform:
    """The platform a stage runs for when its image is of another platform than the implicit
    target: the image's, when it is one of the build platforms; else the target."""
    if target.os == os_ and target.architecture == arch:
        return target
    for p in supported:
        if p.os == os_ and p.architecture == arch:
            return p
    return target
