"""Parsing ``oci-layout://REF@DIGEST`` ops (spec/llb.md §5).

The identifier names an image by digest: ``oci-layout://NAME@sha256:...`` (BuildKit's
Dockerfile frontend writes ``docker.io/library/NAME@sha256:...`` with the store in
``oci.store``). Attrs: ``oci.store`` (store name; default: NAME as written, without a tag),
``oci.session`` (the session serving the store; default: the build's sessions),
``oci.layerlimit`` (decimal > 0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bkcore.errors import DefinitionError, SourceError
from bkcore.llb.platforms import Platform

__all__ = ["SCHEME", "OCILayoutSpec", "parse"]

SCHEME = "oci-layout://"
_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})")


@dataclass(frozen=True, slots=True)
class OCILayoutSpec:
    """A parsed ``oci-layout://`` op."""

    identifier: str
    name: str
    digest: str
    store: str
    session: str
    platform: Platform
    layer_limit: int | None = None

    @property
    def store_id(self) -> str:
        """The store id asked of the client (``oci:<store>``)."""
        return "oci:" + self.store


def _strip_tag(name: str) -> str:
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def parse(identifier: str, attrs: Mapping[str, str], platform: str | None) -> OCILayoutSpec:
    """The :class:`OCILayoutSpec` of ``oci-layout://REF@DIGEST``, its attrs and platform."""
    if not identifier.startswith(SCHEME):
        raise SourceError(f"invalid oci-layout source {identifier!r}: expected oci-layout://REF")
    ref = identifier[len(SCHEME) :]
    name, sep, digest = ref.rpartition("@")
    if not sep or not _DIGEST.fullmatch(digest):
        raise SourceError(f"{identifier}: the reference must name a digest (NAME@sha256:...)")
    name = _strip_tag(name)
    store = attrs.get("oci.store", "") or name
    if not store:
        raise SourceError(f"{identifier}: no store name (oci.store or NAME@...)")
    limit: int | None = None
    text = attrs.get("oci.layerlimit", "")
    if text:
        if not text.isdigit() or int(text) <= 0:
            raise SourceError(f"invalid oci.layerlimit {text!r} for {identifier}: expected > 0")
        limit = int(text)
    try:
        plat = Platform.parse(platform) if platform else Platform.host()
    except DefinitionError as exc:
        raise SourceError(f"invalid platform {platform!r} for {identifier}: {exc}") from exc
    return OCILayoutSpec(
        identifier=identifier,
        name=name,
        digest=digest,
        store=store,
        session=attrs.get("oci.session", ""),
        platform=plat,
        layer_limit=limit,
    )
