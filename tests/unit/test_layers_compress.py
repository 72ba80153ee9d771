"""Layer compression (gzip/zstd/none), decoding by magic, the compressed-blob cache, and
whiteout/opaque handling when applying."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from bkcore.cache.content import ContentStore
from bkcore.cache.db import Database
from bkcore.errors import ExportError
from bkcore.layers.apply import apply_layer
from bkcore.layers.blobcache import LayerBlobCache
from bkcore.layers.compress import (
    COMPRESSIONS,
    Compression,
    DecodedReader,
    compress_tar,
    media_type,
)
from bkcore.layers.write import Writable, write_directory


def sample_tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "conf").write_text("setting=1\n" * 500)
    (root / "data.bin").write_bytes(bytes(300_000) + os.urandom(100_000))
    return root


def tar_of(root: Path) -> bytes:
    buf = io.BytesIO()
    write_directory(root, buf)
    return buf.getvalue()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_compress_round_trip_and_digests(tmp_path: Path, compression: Compression) -> None:
    root = sample_tree(tmp_path / "t")
    plain = tar_of(root)
    out = io.BytesIO()
    blob = compress_tar(lambda sink: write_directory(root, sink), out, compression)
    data = out.getvalue()
    assert blob.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert blob.size == len(data)
    assert blob.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    if compression == "gzip":
        assert data[:10] == bytes.fromhex("1f8b08000000000000ff")
        assert gzip.decompress(data) == plain
        assert len(data) < len(plain) // 2
    elif compression == "zstd":
        assert data[:4] == b"\x28\xb5\x2f\xfd"
        assert zstandard.ZstdDecompressor().decompressobj().decompress(data) == plain
    else:
        assert data == plain and blob.digest == blob.diff_id
    reader = DecodedReader(io.BytesIO(data))
    assert reader.compression == compression
    assert reader.drain() == blob.diff_id and reader.size == len(plain)
    again = compress_tar(lambda sink: write_directory(root, sink), io.BytesIO(), compression)
    assert again == blob  # deterministic


def test_multi_member_gzip_is_read_whole(tmp_path: Path) -> None:
    plain = tar_of(sample_tree(tmp_path / "t"))
    half = len(plain) // 2
    data = gzip.compress(plain[:half]) + gzip.compress(plain[half:])
    assert DecodedReader(io.BytesIO(data)).drain() == "sha256:" + hashlib.sha256(plain).hexdigest()


def test_media_types() -> None:
    assert media_type("gzip", oci=True) == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert media_type("zstd", oci=False) == "application/vnd.docker.image.rootfs.diff.tar.zstd"


def make_cache(tmp_path: Path) -> LayerBlobCache:
    (tmp_path / "cs").mkdir()
    return LayerBlobCache(ContentStore(tmp_path / "cs", Database(tmp_path / "cs" / "m.db")))


def test_blob_cache_never_compresses_a_layer_twice(tmp_path: Path) -> None:
    root = sample_tree(tmp_path / "t")
    cache = make_cache(tmp_path)
    calls = []

    def produce(sink: Writable) -> None:
        calls.append(1)
        write_directory(root, sink)

    first = cache.get_or_create(produce, "gzip", key="snap-1")
    assert cache.content.has(first.digest) and cache.compressions == 1
    # same snapshot key: no tar written, no compression
    assert cache.get_or_create(produce, "gzip", key="snap-1") == first
    assert len(calls) == 1 and cache.compressions == 1
    # same content under another key: tar written to learn the diff ID, cached blob returned
    assert cache.get_or_create(produce, "gzip", key="snap-2") == first
    assert cache.get_or_create(produce, "gzip", key="snap-2") == first
    assert len(calls) == 2
    assert cache.content.digests() == [first.digest]
    # another compression is another blob; its cache entry is independent
    z = cache.get_or_create(produce, "zstd", key="snap-1")
    assert z.diff_id == first.diff_id and z.digest != first.digest
    assert cache.lookup(first.diff_id, "gzip") == first
    assert cache.lookup(first.diff_id, "uncompressed") is None
    # a pruned blob is a miss and is made again
    cache.content.delete(first.digest)
    assert cache.lookup(first.diff_id, "gzip") is None
    remade = cache.get_or_create(produce, "gzip", key="snap-1")
    assert remade == first and cache.content.has(first.digest)
    assert not list(cache.content.ingest_dir.iterdir())


def test_blob_cache_shared_between_store_objects(tmp_path: Path) -> None:
    root = sample_tree(tmp_path / "t")
    cache = make_cache(tmp_path)
    blob = cache.get_or_create(lambda s: write_directory(root, s), "zstd", key="k")
    other = LayerBlobCache(cache.content)
    assert other.get_or_create(lambda s: pytest.fail("recompressed"), "zstd", key="k") == blob


def layer(entries: list[tuple[str, bytes | None]]) -> bytes:
    """name → file bytes (None: directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "dir" / "sub").mkdir(parents=True)
    for name in ("a", "b", "sub/c"):
        (root / "dir" / name).write_text(name)
    (root / "other").mkdir()
    (root / "other" / "x").write_text("x")
    (root / "other" / "y").write_text("y")
    (root / "gone").mkdir()
    (root / "gone" / "deep").write_text("d")
    data = layer(
        [
            ("dir/", None),
            ("dir/+early", b"written before the marker"),
            ("dir/.wh..wh..opq", b""),
            ("dir/new", b"n"),
            ("other/.wh.x", b""),
            (".wh.gone", b""),
            (".wh.never-existed", b""),
        ]
    )
    zdata = zstandard.ZstdCompressor().compress(data)
    applied = apply_layer(io.BytesIO(zdata), root, digest="sha256:opq")
    assert applied.compression == "zstd"
    assert sorted(os.listdir(root / "dir")) == ["+early", "new"]
    assert sorted(os.listdir(root / "other")) == ["y"]
    assert sorted(os.listdir(root)) == ["dir", "other"]
    assert not any(n.startswith(".wh.") for _, d, f in os.walk(root) for n in d + f)


class FailingFile:
    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes > 2:
            raise OSError(28, "No space left on device")
        return len(data)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_errors_on_either_side_of_the_pipe_reach_the_caller(
    tmp_path: Path, compression: Compression
) -> None:
    import threading

    root = tmp_path / "t"
    root.mkdir()
    (root / "big").write_bytes(os.urandom(6 << 20))
    before = threading.active_count()
    with pytest.raises(OSError, match="No space left"):
        compress_tar(lambda s: write_directory(root, s), FailingFile(), compression)

    def broken(sink: Writable) -> None:
        sink.write(bytes(3 << 20))
        raise RuntimeError("tar side broke")

    with pytest.raises(RuntimeError, match="tar side broke"):
        compress_tar(broken, io.BytesIO(), compression)
    assert threading.active_count() == before  # the compressing thread always ends


def test_blob_cache_failure_leaves_no_ingest_file(tmp_path: Path) -> None:
    cache = make_cache(tmp_path)

    def broken(sink: Writable) -> None:
        sink.write(bytes(2 << 20))
        raise OSError(5, "Input/output error")

    with pytest.raises(ExportError, match=r"cannot write blob: .*Input/output error"):
        cache.get_or_create(broken, "gzip", key="k")
    assert not list(cache.content.ingest_dir.iterdir())
    assert cache.content.digests() == [] and cache.diff_id_of("k") is None
