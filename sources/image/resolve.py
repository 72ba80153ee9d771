"""Resolving an image reference for one platform: root digest, manifest, config, layers.

:func:`resolve_image` gives everything the source needs to key and pull an image;
:func:`resolve_image_config` is the smaller answer frontends want (root digest and config
bytes, like BuildKit's ``ResolveImageConfig``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bkcore.errors import SourceError
from bkcore.layers.images import MAX_CONFIG_SIZE, Layer, manifest_layers
from bkcore.llb.platforms import Platform
from bkcore.registry_client import ImageReference, RegistryClient, load_hosts

if TYPE_CHECKING:
    from bkcore.progress import SharedProgress

__all__ = [
    "MAX_CONFIG_SIZE",
    "Layer",
    "ResolvedImage",
    "manifest_layers",
    "resolve_image",
    "resolve_image_config",
]


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """``ref`` pinned to ``root_digest`` (the tag's manifest or index) for one platform."""

    ref: ImageReference
    root_digest: str
    manifest_digest: str
    config_digest: str
    config: bytes
    layers: tuple[Layer, ...]


async def resolve_image(
    client: RegistryClient,
    ref: ImageReference,
    platform: Platform,
    progress: SharedProgress | None = None,
) -> ResolvedImage:
    """Resolve ``ref`` (HEAD/GET of the manifest), choose ``platform``, fetch the config."""
    status = f"resolve {ref}"
    started = time.time()
    if progress is not None:
        progress.status(status, started=started)
    try:
        root = await client.resolve(ref)
        pinned = ref.with_digest(root.digest) if ref.digest is None else ref
        manifest = await client.fetch_image_manifest(pinned, platform)
        body = manifest.json
        config_desc = body.get("config")
        if not isinstance(config_desc, dict) or not isinstance(config_desc.get("digest"), str):
            raise SourceError(f"{ref}: manifest {manifest.digest} has no config descriptor")
        config_digest = str(config_desc["digest"])
        config = await client.fetch_blob_bytes(pinned, config_digest, MAX_CONFIG_SIZE)
        layers = manifest_layers(ref, body, config)
    finally:
        if progress is not None:
            progress.status(status, started=started, completed=time.time())
    return ResolvedImage(pinned, root.digest, manifest.digest, config_digest, config, layers)


async def resolve_image_config(
    ref: str, platform: Platform | str | None = None, client: RegistryClient | None = None
) -> tuple[str, bytes]:
    """(root digest, config bytes) of image ``ref`` for ``platform`` (default: the host's).

    The digest is what the reference resolved to (an index for multi-platform images), so a
    frontend can pin ``name:tag@digest`` into its source op.
    """
    plat = (
        platform
        if isinstance(platform, Platform)
        else (Platform.parse(platform) if platform else Platform.host())
    )
    parsed = ImageReference.parse(ref)
    if client is not None:
        resolved = await resolve_image(client, parsed, plat)
    else:
        async with RegistryClient(hosts=load_hosts()) as own:
            resolved = await resolve_image(own, parsed, plat)
    return resolved.root_digest, resolved.config
