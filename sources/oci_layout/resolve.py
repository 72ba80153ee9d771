"""Resolving an image in a client's OCI layout: root (index or manifest), platform, config.

Like BuildKit, the root's kind is detected from its bytes (the digest alone names it): an
index (``manifests``) picks the platform's manifest as docker-image does; a manifest is used
as it is. Every blob is read through the session store and verified.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bkcore.errors import SourceError
from bkcore.layers.images import MAX_CONFIG_SIZE, Layer, manifest_layers
from bkcore.registry_client import MAX_MANIFEST_SIZE, select_manifest

if TYPE_CHECKING:
    from bkcore.llb.platforms import Platform
    from bkcore.sources.oci_layout.content import SessionContentStore

__all__ = ["ResolvedLayout", "resolve_layout"]


@dataclass(frozen=True, slots=True)
class ResolvedLayout:
    """The image ``root_digest`` names in a layout, for one platform."""

    root_digest: str
    manifest_digest: str
    config_digest: str
    config: bytes
    layers: tuple[Layer, ...]


def _json(label: str, digest: str, data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise SourceError(
            f"{label}: {digest} is not JSON (neither an index nor a manifest)"
        ) from None
    if not isinstance(doc, dict):
        raise SourceError(f"{label}: {digest} is neither an index nor a manifest")
    return doc


def _is_index(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("manifests"), list) and "config" not in doc


def _descriptor(label: str, desc: Any, what: str) -> tuple[str, int]:
    if not isinstance(desc, dict):
        raise SourceError(f"{label}: {what} descriptor is missing")
    digest, size = desc.get("digest"), desc.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise SourceError(f"{label}: {what} descriptor without digest or size")
    return digest, size


async def resolve_layout(
    store: SessionContentStore, root_digest: str, platform: Platform
) -> ResolvedLayout:
    """Read ``root_digest`` from ``store`` and everything the image needs but its layers."""
    label = store.label
    size = await store.info(root_digest)
    doc = _json(label, root_digest, await store.read_bytes(root_digest, size, MAX_MANIFEST_SIZE))
    manifest_digest = root_digest
    if _is_index(doc):
        entry = select_manifest(doc["manifests"], platform, label)
        manifest_digest, msize = _descriptor(label, entry, "manifest")
        data = await store.read_bytes(manifest_digest, msize, MAX_MANIFEST_SIZE)
        doc = _json(label, manifest_digest, data)
        if _is_index(doc):
            raise SourceError(f"{label}: nested index {manifest_digest} is not supported")
    if "config" not in doc or not isinstance(doc.get("layers"), list):
        raise SourceError(f"{label}: {manifest_digest} is neither an index nor a manifest")
    config_digest, config_size = _descriptor(label, doc.get("config"), "config")
    config = await store.read_bytes(config_digest, config_size, MAX_CONFIG_SIZE)
    layers = manifest_layers(label, doc, config)
    return ResolvedLayout(root_digest, manifest_digest, config_digest, config, layers)
