"""Docker image reference normalisation (``busybox`` -> ``docker.io/library/busybox:latest``).

The Go client writes image identifiers fully qualified; the digest of an image source op
depends on it, so the SDK applies the same rules (distribution/reference's
``ParseNormalizedNamed`` followed by ``TagNameOnly``).
"""

from __future__ import annotations

import re

from bkcore.errors import DefinitionError

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_HEX64 = re.compile(r"^[a-f0-9]{64}$")

DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAIN = "index.docker.io"


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    head = name[:i]
    if i == -1 or (
        not any(c in head for c in ".:") and head != "localhost" and head.lower() == head
    ):
        domain, rest = DEFAULT_DOMAIN, name
    else:
        domain, rest = head, name[i + 1 :]
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = "library/" + rest
    return domain, rest


def normalize_image_ref(ref: str) -> str:
    """Return the fully qualified form of ``ref``; raise DefinitionError if it is invalid."""
    if _HEX64.match(ref):
        raise DefinitionError(
            f"invalid image reference {ref!r}: cannot specify 64-byte hexadecimal strings"
        )
    domain, rest = _split_domain(ref)
    remote = rest.split(":", 1)[0].split("@", 1)[0]
    if remote.lower() != remote:
        raise DefinitionError(f"invalid image reference {ref!r}: repository name must be lowercase")
    full = f"{domain}/{rest}"
    m = _REFERENCE.match(full)
    if m is None:
        raise DefinitionError(f"invalid image reference {ref!r}")
    if len(m.group("name")) > 255:
        raise DefinitionError(f"invalid image reference {ref!r}: name longer than 255 characters")
    if m.group("tag") is None and m.group("digest") is None:
        full += ":latest"
    return full
