"""What an image's manifest and config say about its layers, and its cache keys.

Shared by every source that applies image layers (``docker-image``, ``oci-layout``):
:class:`Layer` (a manifest's layer descriptor with its ``diff_id`` from the config),
:func:`manifest_layers`, and the keys of spec/solver.md §2.3. Map 1 is the digest of the Go
JSON ``{"Digest","OS","Arch"[,"Variant"][,"Limit"]}`` of the resolved root descriptor and the
op's platform (:func:`root_key`); map 2 is the chain ID of ``rootfs.diff_ids`` cut to the
layer limit (:func:`chain_ids`): ``chainID(1) = diffID(1)``,
``chainID(n) = sha256(chainID(n-1) + " " + diffID(n))``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bkcore.errors import SourceError
from bkcore.ops.cachejson import JSONValue, go_json

if TYPE_CHECKING:
    from bkcore.llb.platforms import Platform
    from bkcore.registry_client import ImageReference

__all__ = ["MAX_CONFIG_SIZE", "Layer", "chain_ids", "manifest_layers", "root_key"]

#: Image configs bigger than this are refused.
MAX_CONFIG_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of the chosen manifest with its uncompressed digest from the config."""

    digest: str
    size: int
    media_type: str
    diff_id: str


def manifest_layers(
    ref: ImageReference | str, manifest: dict[str, Any], config: bytes
) -> tuple[Layer, ...]:
    """The layers of ``manifest`` paired with the config's ``rootfs.diff_ids``; SourceError
    naming ``ref`` when they are missing or do not match."""
    descs = manifest.get("layers")
    if not isinstance(descs, list):
        raise SourceError(f"{ref}: manifest has no layers list")
    try:
        doc = json.loads(config)
        diff_ids = doc["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{ref}: image config has no rootfs.diff_ids") from exc
    if not isinstance(diff_ids, list) or len(diff_ids) != len(descs):
        raise SourceError(
            f"{ref}: manifest lists {len(descs)} layers but the config "
            f"{len(diff_ids) if isinstance(diff_ids, list) else 0} diff_ids"
        )
    out: list[Layer] = []
    for desc, diff_id in zip(descs, diff_ids, strict=True):
        if not isinstance(desc, dict) or not isinstance(diff_id, str):
            raise SourceError(f"{ref}: malformed layer descriptor or diff_id")
        digest, size = desc.get("digest"), desc.get("size")
        if not isinstance(digest, str) or not isinstance(size, int):
            raise SourceError(f"{ref}: layer descriptor without digest or size")
        out.append(Layer(digest, size, str(desc.get("mediaType", "")), diff_id))
    return tuple(out)


def root_key(root_digest: str, platform: Platform, limit: int | None) -> str:
    """Key string of map 1: ``sha256:`` of the Go JSON of digest, platform and limit."""
    doc: dict[str, JSONValue] = {
        "Digest": root_digest,
        "OS": platform.os,
        "Arch": platform.architecture,
    }
    if platform.variant:
        doc["Variant"] = platform.variant
    if limit is not None:
        doc["Limit"] = limit
    return "sha256:" + hashlib.sha256(go_json(doc).encode()).hexdigest()


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain ID of every prefix of ``diff_ids`` (one per layer)."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out
