"""The layer chain of a result: one blob per snapshot, made once, reused as BuildKit does."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from bkcore.cache.content import ContentStore
from bkcore.cache.db import Database
from bkcore.cache.snapshots import COPY, SnapshotStore
from bkcore.errors import ExportError
from bkcore.layers.blobcache import LayerBlobCache, LayerOrigin
from bkcore.layers.chain import ChainOptions, compression_of, layer_chain, layer_groups
from bkcore.layers.compress import EMPTY_LAYER_DIFF_ID

EMPTY_GZIP = "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1"


def stores(tmp_path: Path) -> tuple[SnapshotStore, LayerBlobCache]:
    (tmp_path / "root").mkdir()
    db = Database(tmp_path / "root" / "m.db")
    snaps = SnapshotStore(tmp_path / "root" / "snaps", db, COPY)
    return snaps, LayerBlobCache(ContentStore(tmp_path / "root" / "content", db))


def commit(store: SnapshotStore, parent: str | None, desc: str, files: dict[str, str]) -> str:
    with store.prepare(parent, desc) as m:
        root = m.mount()
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            os.utime(path, (1_500_000_000, 1_500_000_000))
        return m.commit()


def names(cache: LayerBlobCache, digest: str) -> list[str]:
    data = cache.content.path(digest).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getnames()


def test_one_layer_per_snapshot_and_empty_diff_kept(tmp_path: Path) -> None:
    snaps, cache = stores(tmp_path)
    a = commit(snaps, None, "base", {"a": "1"})
    b = commit(snaps, a, "run x", {"d/x": "2"})
    c = commit(snaps, b, "workdir", {})
    layers = layer_chain(snaps, cache, c, ChainOptions())
    assert [layer.description for layer in layers] == ["base", "run x", "workdir"]
    assert names(cache, layers[1].digest) == ["d", "d/x"]
    # an empty diff is BuildKit's 32-byte empty gzip layer, byte for byte
    assert layers[2].digest == EMPTY_GZIP and layers[2].size == 32
    assert layers[2].diff_id == EMPTY_LAYER_DIFF_ID
    data = cache.content.path(EMPTY_GZIP).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == EMPTY_GZIP
    assert gzip.decompress(data) == bytes(1024)


def test_blob_made_once_and_first_compression_sticks(tmp_path: Path) -> None:
    snaps, cache = stores(tmp_path)
    a = commit(snaps, None, "base", {"a": "1" * 5000})
    first = layer_chain(snaps, cache, a, ChainOptions(compression="uncompressed"))
    assert first[0].compression == "uncompressed" and cache.compressions == 1
    # a later gzip export reuses the uncompressed blob (BuildKit: no conversion)...
    again = layer_chain(snaps, cache, a, ChainOptions(compression="gzip"))
    assert again[0].digest == first[0].digest and cache.compressions == 1
    # ...unless force-compression asks for a conversion; the diff ID stays
    forced = layer_chain(snaps, cache, a, ChainOptions(compression="gzip", force=True))
    assert forced[0].compression == "gzip" and forced[0].digest != first[0].digest
    assert forced[0].diff_id == first[0].diff_id and cache.compressions == 2
    # both blobs stay; a default export now finds the gzip one first
    assert layer_chain(snaps, cache, a, ChainOptions())[0].digest == forced[0].digest


def test_epoch_clamps_mtimes_so_two_chains_agree(tmp_path: Path) -> None:
    snaps, cache = stores(tmp_path)
    base = commit(snaps, None, "base", {"a": "1"})
    one = commit(snaps, base, "run", {"f": "same"})
    two = commit(snaps, base, "run", {"f": "same"})
    for sid, stamp in ((one, 1_600_000_000), (two, 1_650_000_000)):
        info = snaps.get(sid)
        os.utime(snaps.dir / info.layers[-1] / "f", (stamp, stamp))
    plain = [layer_chain(snaps, cache, s, ChainOptions())[-1].diff_id for s in (one, two)]
    assert plain[0] != plain[1]
    opts = ChainOptions(epoch=1_000_000_000)
    clamped = [layer_chain(snaps, cache, s, opts)[-1] for s in (one, two)]
    assert clamped[0].diff_id == clamped[1].diff_id and clamped[0].digest == clamped[1].digest


def test_pulled_layer_keeps_its_blob_and_force_recompresses_it(tmp_path: Path) -> None:
    snaps, cache = stores(tmp_path)
    top = commit(snaps, None, "image layer", {"p": "pulled"})
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w") as tf:
        info = tarfile.TarInfo("p")
        info.size = 6
        tf.addfile(info, io.BytesIO(b"pulled"))
    tar = tar_buf.getvalue()
    blob = gzip.compress(tar, mtime=0)
    digest = cache.content.ingest(io.BytesIO(blob))
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    media = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    cache.record_origin(top, LayerOrigin(digest, len(blob), media, diff_id))
    cache.add_source(digest, "reg.example:5000", "lib/base")
    (got,) = layer_chain(snaps, cache, top, ChainOptions(compression="zstd"))
    assert (got.digest, got.compression, got.diff_id) == (digest, "gzip", diff_id)
    assert got.sources == {"reg.example:5000": "lib/base"}
    assert cache.compressions == 0
    (forced,) = layer_chain(snaps, cache, top, ChainOptions(compression="zstd", force=True))
    assert forced.compression == "zstd" and forced.diff_id == diff_id
    assert cache.content.path(forced.digest).read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    # a pruned origin blob: the layer is made from the snapshot instead
    cache.content.delete(digest)
    (rebuilt,) = layer_chain(snaps, cache, top, ChainOptions(compression="gzip"))
    assert rebuilt.digest != digest and names(cache, rebuilt.digest) == ["p"]


def test_merge_exports_inputs_layers_and_local_runs_collapse(tmp_path: Path) -> None:
    snaps, cache = stores(tmp_path)
    a = commit(snaps, None, "base", {"a": "1"})
    a2 = commit(snaps, a, "run a", {"a2": "1"})
    loc1 = commit(snaps, None, "local source for ctx", {"c1": "1"})
    loc2 = commit(snaps, loc1, "local source for ctx", {"c2": "2"})
    merged = snaps.merge([a2, loc2], "merge")
    groups = layer_groups(snaps, merged)
    assert [[i.id for i in g] for g in groups] == [[a], [a2], [loc1, loc2]]
    layers = layer_chain(snaps, cache, merged, ChainOptions())
    assert [layer.snapshot for layer in layers] == [a, a2, loc2]
    # the incremental local source is one layer: its whole tree
    assert names(cache, layers[2].digest) == ["c1", "c2"]


def test_compression_of_media_types() -> None:
    assert compression_of("application/vnd.oci.image.layer.v1.tar+gzip") == "gzip"
    assert compression_of("application/vnd.docker.image.rootfs.diff.tar.gzip") == "gzip"
    assert compression_of("application/vnd.oci.image.layer.v1.tar+zstd") == "zstd"
    assert compression_of("application/vnd.oci.image.layer.v1.tar") == "uncompressed"
    with pytest.raises(ExportError, match="not supported"):
        compression_of("application/vnd.example.layer+lz4")
