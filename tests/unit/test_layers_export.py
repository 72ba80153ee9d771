"""A committed snapshot's layer blob is archived and compressed once, then served from cache."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bkcore.cache.changes import Change
from bkcore.cache.content import ContentStore
from bkcore.cache.db import Database
from bkcore.cache.snapshots import COPY, SnapshotStore
from bkcore.layers.blobcache import LayerBlobCache
from bkcore.layers.export import snapshot_blob


def setup(tmp_path: Path) -> tuple[SnapshotStore, LayerBlobCache, str]:
    (tmp_path / "root").mkdir()
    db = Database(tmp_path / "root" / "m.db")
    store = SnapshotStore(tmp_path / "root" / "snaps", db, COPY)
    cache = LayerBlobCache(ContentStore(tmp_path / "root" / "content", db))
    with store.prepare(None, "base") as m:
        (m.mount() / "a").write_text("a")
        base = m.commit()
    with store.prepare(base, "child") as m:
        (m.mount() / "a").unlink()
        (m.mount() / "b").write_text("b" * 1000)
        os.utime(m.mount() / "b", (2_000_000_000, 2_000_000_000))
        child = m.commit()
    return store, cache, child


def test_snapshot_blob_is_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, cache, child = setup(tmp_path)
    blob = snapshot_blob(store, cache, child, "gzip")
    with tarfile.open(
        fileobj=io.BytesIO(gzip.decompress(cache.content.path(blob.digest).read_bytes()))
    ) as tf:
        assert tf.getnames() == [".wh.a", "b"]
    real_diff = store.diff

    @contextmanager
    def no_walk(snapshot_id: str) -> Iterator[list[Change]]:
        raise AssertionError("the snapshot was walked again")
        with real_diff(snapshot_id) as changes:  # pragma: no cover
            yield changes

    monkeypatch.setattr(store, "diff", no_walk)
    assert snapshot_blob(store, cache, child, "gzip") == blob
    assert cache.compressions == 1
    monkeypatch.setattr(store, "diff", real_diff)
    # another epoch is another tar: the newer mtime is clamped, so another diff ID
    clamped = snapshot_blob(store, cache, child, "gzip", source_date_epoch=1_000_000_000)
    assert clamped.diff_id != blob.diff_id and cache.compressions == 2
