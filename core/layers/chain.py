"""The layer chain of a build result: one blob per snapshot of its chain, bottom to top.

What BuildKit v0.11 exports (spec/exporters.md §2.1), over this store's snapshots:

* A result's snapshot lists in ``chain`` the snapshots whose own changes, stacked, give its
  view: each exec or file step that made a snapshot is one layer, a merge contributes its
  inputs' layers, a diff snapshot is one layer. Empty diffs are kept (BuildKit writes the
  32-byte empty gzip layer for them, for example a ``WORKDIR`` that changed nothing).
* A local source synced incrementally is a run of snapshots (each on the previous sync);
  BuildKit has one snapshot per local source, so such a run is exported as one layer: the
  whole tree of its top snapshot.
* A snapshot's blob is made once, at its first export, and reused afterwards whatever the
  ``compression`` asked for then; ``force=True`` converts a blob of another compression
  (the extra blob is kept too). Layers of a pulled image keep the blob they were pulled as
  (recorded by the image source with :meth:`LayerBlobCache.record_origin`); forcing another
  compression recompresses that blob's tar, so its diff ID stays the same.
* With ``epoch`` (SOURCE_DATE_EPOCH), mtimes later than the epoch are clamped in the layers
  made here (what ``rewrite-timestamp`` does in later BuildKit): two builds of the same steps
  give the same diff IDs. Pulled blobs are not rewritten.

Everything here blocks (file walks, compression): call :func:`layer_chain` in a thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bkcore.cache.changes import tree_changes
from bkcore.cache.snapshots import SnapshotInfo, SnapshotStore
from bkcore.errors import ExportError
from bkcore.layers.blobcache import LayerBlobCache, LayerOrigin
from bkcore.layers.compress import (
    COMPRESSIONS,
    CompressedBlob,
    Compression,
    DecodedReader,
)
from bkcore.layers.export import snapshot_key
from bkcore.layers.write import TarInfo, Writable, write_changes

__all__ = [
    "LOCAL_SOURCE_PREFIX",
    "ChainOptions",
    "LayerBlob",
    "compression_of",
    "layer_chain",
    "layer_groups",
]

#: Descriptions of synced local source snapshots start with this (see bkcore.cache.results).
LOCAL_SOURCE_PREFIX = "local source"


@dataclass(frozen=True, slots=True)
class ChainOptions:
    """How new blobs are made: ``compression`` (with ``level``), ``force`` conversion of
    existing blobs of another compression, and the SOURCE_DATE_EPOCH clamp."""

    compression: Compression = "gzip"
    level: int | None = None
    force: bool = False
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class LayerBlob:
    """One layer of an image: its blob in the content store and what the history needs."""

    digest: str
    size: int
    diff_id: str
    compression: Compression
    created: float  #: creation time of the layer's snapshot (Unix seconds)
    description: str  #: the snapshot's description (history ``created_by``)
    snapshot: str  #: the (top) snapshot id
    sources: Mapping[str, str] = field(default_factory=dict)  #: host -> repository


def compression_of(media_type: str) -> Compression:
    """The compression a layer media type names (``...tar+gzip`` -> ``gzip``)."""
    if media_type.endswith(("gzip", "+gzip")):
        return "gzip"
    if media_type.endswith(("zstd", "+zstd")):
        return "zstd"
    if media_type.endswith(".tar") or media_type.endswith(".tar.diff"):
        return "uncompressed"
    raise ExportError(f"layer media type {media_type!r} is not supported for export")


def _is_local(info: SnapshotInfo) -> bool:
    return info.kind == "layer" and info.description.startswith(LOCAL_SOURCE_PREFIX)


def layer_groups(store: SnapshotStore, snapshot_id: str) -> list[list[SnapshotInfo]]:
    """The snapshots of ``snapshot_id``'s chain grouped into layers, bottom to top.

    A group holds one snapshot, or a run of local source snapshots each on the previous
    one (exported as the whole tree of the last)."""
    groups: list[list[SnapshotInfo]] = []
    for member in store.get(snapshot_id).chain:
        info = store.get(member)
        if groups and _is_local(info) and info.parent is not None:
            last = groups[-1][-1]
            if _is_local(last) and last.id == info.parent:
                groups[-1].append(info)
                continue
        groups.append([info])
    return groups


def _existing(cache: LayerBlobCache, key: str, opts: ChainOptions) -> CompressedBlob | None:
    """A blob made earlier for ``key``: the wanted compression first, else (unless forced)
    any other one."""
    diff_id = cache.diff_id_of(key)
    if diff_id is None:
        return None
    order = [opts.compression]
    if not opts.force:
        order += [c for c in COMPRESSIONS if c != opts.compression]
    for compression in order:
        hit = cache.lookup(diff_id, compression)
        if hit is not None:
            return hit
    return None


def _from_origin(cache: LayerBlobCache, origin: LayerOrigin, opts: ChainOptions) -> CompressedBlob:
    """The pulled blob itself, or (forced to another compression) its tar recompressed."""
    have = compression_of(origin.media_type)
    if not opts.force or have == opts.compression:
        return CompressedBlob(origin.digest, origin.size, origin.diff_id, have)
    hit = cache.lookup(origin.diff_id, opts.compression)
    if hit is not None:
        return hit

    def produce(sink: Writable) -> TarInfo:
        with open(cache.content.path(origin.digest), "rb") as raw:
            reader = DecodedReader(raw)
            while block := reader.read(1 << 20):
                sink.write(block)
        return TarInfo(origin.diff_id, 0)

    made = cache.get_or_create(
        produce, opts.compression, level=opts.level, key=f"origin:{origin.digest}"
    )
    if made.diff_id != origin.diff_id:
        raise ExportError(
            f"layer {origin.digest}: its tar hashes to {made.diff_id}, not {origin.diff_id}"
        )
    return made


def _group_blob(
    store: SnapshotStore, cache: LayerBlobCache, group: list[SnapshotInfo], opts: ChainOptions
) -> CompressedBlob:
    top = group[-1]
    if len(group) == 1:
        origin = cache.origin(top.id)
        if origin is not None:
            return _from_origin(cache, origin, opts)
    key = snapshot_key(store, top.id, opts.epoch)
    if len(group) > 1:
        key += ":whole"
    found = _existing(cache, key, opts)
    if found is not None:
        return found

    def produce(sink: Writable) -> TarInfo:
        if len(group) == 1:
            with store.diff(top.id) as changes:
                return write_changes(changes, sink, source_date_epoch=opts.epoch)
        with store.view(top.id) as root:
            return write_changes(tree_changes(None, root), sink, source_date_epoch=opts.epoch)

    return cache.get_or_create(produce, opts.compression, level=opts.level, key=key)


def layer_chain(
    store: SnapshotStore, cache: LayerBlobCache, snapshot_id: str | None, opts: ChainOptions
) -> list[LayerBlob]:
    """The layers of the committed ``snapshot_id`` (None: no layers), bottom to top, each
    blob made at most once (blocking)."""
    if snapshot_id is None:
        return []
    out: list[LayerBlob] = []
    for group in layer_groups(store, snapshot_id):
        blob = _group_blob(store, cache, group, opts)
        top = group[-1]
        out.append(
            LayerBlob(
                digest=blob.digest,
                size=blob.size,
                diff_id=blob.diff_id,
                compression=blob.compression,
                created=top.created_at,
                description=top.description,
                snapshot=top.id,
                sources=cache.sources(blob.digest),
            )
        )
    return out
