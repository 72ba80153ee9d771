"""Pulling an image's layers into a snapshot chain shared between images (and sources).

Each layer prefix (chain ID) is one committed snapshot on top of the previous one. One small
file per chain under ``<store root>/image-chains/`` names the snapshot holding it; a chain
already recorded is reused, so two images with the same base layers share their snapshots
(whether they came from a registry or an OCI layout) and only the missing layers are fetched.
An entry is only a hint: a snapshot pruned since is simply rebuilt. Blobs come from a
:class:`BlobFetcher` (verified while streaming), concurrently, into per-process directories
under ``<store root>/image-pull/`` (swept once their process is gone); layers are applied in
order from there as soon as their blob is there, each verified against its ``diff_id``, while
each blob is copied into the content store beside it (all done before the pull returns).
A chain is built under a lock per chain, in this process and across processes sharing the
store (a ``flock`` under ``<store root>/image-chains.locks/``). Nothing is committed for a
layer that fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bkcore.cache import procs
from bkcore.cache.results import SnapshotResult, commit_result, prepare, results_for
from bkcore.filelock import locked
from bkcore.layers.apply import apply_layer_async
from bkcore.layers.images import chain_ids

if TYPE_CHECKING:
    from bkcore.cache.store import CacheStore
    from bkcore.layers.images import Layer
    from bkcore.progress import SharedProgress

__all__ = [
    "CHAINS_DIR",
    "LOCKS_DIR",
    "PULL_DIR",
    "BlobFetcher",
    "chain_file_lock",
    "lookup",
    "pull_dir",
    "pull_layers",
    "record",
    "sweep_pull_dirs",
]

CHAINS_DIR = "image-chains"
LOCKS_DIR = "image-chains.locks"
PULL_DIR = "image-pull"


def _entry(root: Path, chain_id: str) -> Path:
    algo, _, hexd = chain_id.partition(":")
    return root / CHAINS_DIR / f"{algo}-{hexd}"


def lookup(root: Path, chain_id: str) -> str | None:
    """The snapshot id last recorded for ``chain_id`` (it may have been pruned since)."""
    try:
        return _entry(root, chain_id).read_text().strip() or None
    except FileNotFoundError:
        return None


def record(root: Path, chain_id: str, snapshot_id: str) -> None:
    """Record ``snapshot_id`` as the snapshot of ``chain_id`` (atomic replace)."""
    path = _entry(root, chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    tmp.write_text(snapshot_id + "\n")
    os.replace(tmp, path)


@asynccontextmanager
async def chain_file_lock(root: Path, chain_id: str) -> AsyncIterator[None]:
    """Hold the cross-process lock of ``chain_id`` (a ``flock``, polled so that waiting
    stays cancellable; the kernel drops it when its process dies)."""
    algo, _, hexd = chain_id.partition(":")
    async with locked(root / LOCKS_DIR / f"{algo}-{hexd}"):
        yield


def pull_dir(root: Path) -> Path:
    """A new private download directory of this process."""
    pid, started = procs.me()
    path = root / PULL_DIR / f"{pid}-{started}-{secrets.token_hex(6)}"
    path.mkdir(parents=True)
    return path


def sweep_pull_dirs(root: Path) -> None:
    """Remove download directories whose process is gone."""
    try:
        entries = list(os.scandir(root / PULL_DIR))
    except FileNotFoundError:
        return
    for entry in entries:
        parts = entry.name.split("-")
        if len(parts) == 3 and parts[0].isdigit() and procs.alive(int(parts[0]), parts[1]):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)


class BlobFetcher(Protocol):
    """Streams blob ``digest`` into ``dest``, verified (digest and ``size``), reporting bytes
    received so far; nothing is left at ``dest`` on failure. ``RegistryClient.fetch_blob``
    bound to a reference is one; the ``oci-layout`` source's session store is another."""

    def __call__(
        self, digest: str, dest: Path, size: int | None, progress: Callable[[int], None] | None
    ) -> Awaitable[int]: ...


_locks: dict[tuple[str, str], asyncio.Lock] = {}
_PROGRESS_INTERVAL = 0.1


def _chain_lock(root: Path, chain_id: str) -> asyncio.Lock:
    """One lock per (store, chain) in this process: two ops never build one chain twice."""
    key = (str(root), chain_id)
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = asyncio.Lock()
    return lock


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


async def _existing(store: CacheStore, chain_id: str) -> SnapshotResult | None:
    sid = await asyncio.to_thread(lookup, store.root, chain_id)
    if sid is None:
        return None
    return await results_for(store).load(sid)


async def _download(
    store: CacheStore,
    fetch: BlobFetcher,
    layer: Layer,
    workdir: Path,
    progress: SharedProgress,
    tg: asyncio.TaskGroup,
) -> Path:
    """The layer blob on disk: from the content store, else downloaded (verified). A
    downloaded blob is copied into the content store by a task of its own, so the layer can
    be extracted from the download meanwhile."""
    if await asyncio.to_thread(store.content.has, layer.digest):
        return store.content.path(layer.digest)
    dest = workdir / layer.digest.replace(":", "-")
    started = time.time()
    last = 0.0

    def report(done: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= _PROGRESS_INTERVAL:
            last = now
            progress.status(layer.digest, current=done, total=layer.size, started=started)

    await fetch(layer.digest, dest, layer.size, report)
    progress.status(
        layer.digest,
        current=layer.size,
        total=layer.size,
        started=started,
        completed=time.time(),
    )
    tg.create_task(asyncio.to_thread(store.content.ingest, dest, layer.digest))
    return dest


async def _apply(
    store: CacheStore,
    parent: SnapshotResult | None,
    layer: Layer,
    chain_id: str,
    blob: asyncio.Task[Path],
    progress: SharedProgress,
) -> SnapshotResult:
    """The snapshot of ``chain_id``: reused when recorded, else ``layer`` applied on
    ``parent`` and committed."""
    async with _chain_lock(store.root, chain_id), chain_file_lock(store.root, chain_id):
        found = await _existing(store, chain_id)
        if found is not None:
            return found
        path = await blob
        mutable = await prepare(store, parent, f"image layer {layer.diff_id} (chain {chain_id})")
        status = f"extracting {layer.digest}"
        started = time.time()
        progress.status(status, started=started)
        try:
            dest = await asyncio.to_thread(mutable.mount)
            await apply_layer_async(path, dest, digest=layer.digest, diff_id=layer.diff_id)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(mutable.discard))
            raise
        result = await commit_result(store, mutable)
        progress.status(status, started=started, completed=time.time())
        await asyncio.to_thread(record, store.root, chain_id, result.id)
        await asyncio.to_thread(_record_origin, store, result.id, layer)
        return result


def _record_origin(store: CacheStore, snapshot_id: str, layer: Layer) -> None:
    """Remember the blob this layer snapshot came from: image exports reuse it as is."""
    from bkcore.layers.blobcache import LayerBlobCache, LayerOrigin

    origin = LayerOrigin(layer.digest, layer.size, layer.media_type, layer.diff_id)
    LayerBlobCache(store.content).record_origin(snapshot_id, origin)


async def _release(result: SnapshotResult | None) -> None:
    if result is not None and not result.released:
        await asyncio.shield(result.release())


async def pull_layers(
    store: CacheStore,
    fetch: BlobFetcher,
    label: str,
    layers: tuple[Layer, ...],
    progress: SharedProgress,
) -> SnapshotResult:
    """A reference to the committed snapshot of all ``layers`` (an empty one for none), blobs
    from ``fetch``; ``label`` names the image in descriptions."""
    if not layers:
        mutable = await prepare(store, None, f"empty image {label}")
        return await commit_result(store, mutable)
    chains = chain_ids([layer.diff_id for layer in layers])
    top: SnapshotResult | None = None
    start = 0
    for i in reversed(range(len(chains))):
        top = await _existing(store, chains[i])
        if top is not None:
            start = i + 1
            break
    if start == len(layers) and top is not None:
        return top
    await asyncio.to_thread(sweep_pull_dirs, store.root)
    workdir = await asyncio.to_thread(pull_dir, store.root)
    try:
        try:
            async with asyncio.TaskGroup() as tg:
                blobs = [
                    tg.create_task(_download(store, fetch, layer, workdir, progress, tg))
                    for layer in layers[start:]
                ]
                for i, blob in enumerate(blobs, start):
                    child = await _apply(store, top, layers[i], chains[i], blob, progress)
                    await _release(top)
                    top = child
        except BaseExceptionGroup as eg:
            raise _first_error(eg) from None
    except BaseException:
        await _release(top)
        raise
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, workdir, True))
    assert top is not None
    return top
