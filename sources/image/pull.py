"""Pulling a registry image's layers into a snapshot chain shared between images.

The chain machinery (records per chain ID, locks, concurrent verified downloads, layers
applied in order) is :func:`bkcore.layers.pull.pull_layers`; :func:`pull_chain` feeds it
blobs from the registry and then remembers which repository holds each blob.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING

from bkcore.layers.pull import BlobFetcher, pull_layers

if TYPE_CHECKING:
    from bkcore.cache.results import SnapshotResult
    from bkcore.cache.store import CacheStore
    from bkcore.layers.images import Layer
    from bkcore.progress import SharedProgress
    from bkcore.registry_client import ImageReference, RegistryClient

__all__ = ["BlobFetcher", "pull_chain", "pull_layers"]


async def pull_chain(
    store: CacheStore,
    client: RegistryClient,
    ref: ImageReference,
    layers: tuple[Layer, ...],
    progress: SharedProgress,
) -> SnapshotResult:
    """A reference to the committed snapshot of all ``layers`` (an empty one for none)."""
    top = await pull_layers(store, partial(client.fetch_blob, ref), str(ref), layers, progress)
    await asyncio.to_thread(_record_sources, store, ref, layers)
    return top


def _record_sources(store: CacheStore, ref: ImageReference, layers: tuple[Layer, ...]) -> None:
    """Remember which repository of which registry holds each layer blob, so a push to that
    registry can mount it from there (containerd's ``distribution.source`` labels)."""
    from bkcore.layers.blobcache import LayerBlobCache

    cache = LayerBlobCache(store.content)
    for layer in layers:
        cache.add_source(layer.digest, ref.domain, ref.repository)
