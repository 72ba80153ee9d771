"""A committed snapshot's layer blob: its diff against its parent, archived and compressed once.

The blob cache key names the snapshot row (id, number, creation time) and the epoch, so a
snapshot exported before is answered from the index without walking its files; a snapshot
with the same content as another (same diff ID) shares that one's blob.
"""

from __future__ import annotations

from bkcore.cache.snapshots import SnapshotStore
from bkcore.layers.blobcache import LayerBlobCache
from bkcore.layers.compress import CompressedBlob, Compression
from bkcore.layers.write import TarInfo, Writable, write_changes


def snapshot_key(store: SnapshotStore, snapshot_id: str, source_date_epoch: int | None) -> str:
    info = store.get(snapshot_id)
    return f"snapshot:{info.id}:{info.num}:{info.created_at!r}:epoch={source_date_epoch}"


def snapshot_blob(
    store: SnapshotStore,
    cache: LayerBlobCache,
    snapshot_id: str,
    compression: Compression,
    *,
    level: int | None = None,
    source_date_epoch: int | None = None,
) -> CompressedBlob:
    """The layer blob of the committed snapshot ``snapshot_id`` (blocking: run in a thread)."""

    def produce(sink: Writable) -> TarInfo:
        with store.diff(snapshot_id) as changes:
            return write_changes(changes, sink, source_date_epoch=source_date_epoch)

    key = snapshot_key(store, snapshot_id, source_date_epoch)
    return cache.get_or_create(produce, compression, level=level, key=key)
