"""Parsing ``docker-image://REF`` ops and computing their cache keys (spec/solver.md §2.3).

Map 1 is the digest of the Go JSON ``{"Digest","OS","Arch"[,"Variant"][,"Limit"]}`` of the
resolved root descriptor and the op's platform; map 2 is the chain ID of ``rootfs.diff_ids``
(cut to ``image.layerlimit``): ``chainID(1) = diffID(1)``,
``chainID(n) = sha256(chainID(n-1) + " " + diffID(n))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bkcore.errors import DefinitionError, SourceError
from bkcore.layers.images import chain_ids, root_key
from bkcore.llb.platforms import Platform
from bkcore.registry_client import ImageReference

__all__ = ["RESOLVE_MODES", "ImageSpec", "chain_ids", "parse", "root_key"]

SCHEME = "docker-image://"
#: ``image.resolvemode`` values; without an image store all of them ask the registry.
RESOLVE_MODES = ("default", "pull", "local")


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """A parsed image source op."""

    ref: ImageReference
    platform: Platform
    resolve_mode: str = "default"
    layer_limit: int | None = None


def parse(identifier: str, attrs: Mapping[str, str], platform: str | None) -> ImageSpec:
    """The :class:`ImageSpec` of ``docker-image://REF``, its ``image.*`` attrs and platform."""
    if not identifier.startswith(SCHEME):
        raise SourceError(f"invalid image source {identifier!r}: expected docker-image://REF")
    raw = identifier[len(SCHEME) :]
    if not raw:
        raise SourceError(f"invalid image source {identifier!r}: the reference is empty")
    ref = ImageReference.parse(raw)
    mode = attrs.get("image.resolvemode", "") or "default"
    if mode not in RESOLVE_MODES:
        raise SourceError(
            f"invalid image.resolvemode {mode!r} for {raw}: expected default, pull or local"
        )
    limit: int | None = None
    text = attrs.get("image.layerlimit", "")
    if text:
        if not text.isdigit():
            raise SourceError(f"invalid image.layerlimit {text!r} for {raw}: expected a number")
        limit = int(text)
    try:
        plat = Platform.parse(platform) if platform else Platform.host()
    except DefinitionError as exc:
        raise SourceError(f"invalid platform {platform!r} for {raw}: {exc}") from exc
    return ImageSpec(ref, plat, mode, limit)
