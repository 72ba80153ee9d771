"""Image references split into the parts a registry request needs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bkcore.errors import DefinitionError, SourceError
from bkcore.llb.imageref import normalize_image_ref

#: Docker Hub's API endpoint for references whose domain is ``docker.io``.
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"


@dataclass(frozen=True, slots=True)
class ImageReference:
    """``domain/repository[:tag][@digest]`` after docker.io/library normalisation."""

    domain: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ImageReference:
        """Parse and normalise ``ref`` (``busybox`` -> ``docker.io/library/busybox:latest``)."""
        try:
            full = normalize_image_ref(ref)
        except DefinitionError as exc:
            raise SourceError(str(exc)) from exc
        name, _, digest = full.partition("@")
        domain, _, rest = name.partition("/")
        tag: str | None = None
        colon = rest.rfind(":")
        if colon != -1:
            rest, tag = rest[:colon], rest[colon + 1 :]
        return cls(domain, rest, tag, digest or None)

    @property
    def endpoint_host(self) -> str:
        """The ``host[:port]`` HTTP requests go to (Docker Hub's API host for docker.io)."""
        return DOCKER_HUB_ENDPOINT if self.domain == "docker.io" else self.domain

    @property
    def object(self) -> str:
        """What a manifest request names: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> ImageReference:
        return ImageReference(self.domain, self.repository, self.tag, digest)

    def with_tag(self, tag: str | None) -> ImageReference:
        return ImageReference(self.domain, self.repository, tag, None)

    def __str__(self) -> str:
        out = f"{self.domain}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def split_host_port(host: str) -> tuple[str, int | None]:
    """``"[::1]:5000"`` -> ``("::1", 5000)``; ``"localhost"`` -> ``("localhost", None)``."""
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        return name, int(rest[1:]) if rest.startswith(":") else None
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, int(port) if port.isdigit() else None
    return host, None


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (with or without a port)."""
    name, _ = split_host_port(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
