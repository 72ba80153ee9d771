"""Layer decoding in large blocks and zstd's multi-threaded, worker-count independent frames."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
from typing import Any

import pytest
import zstandard

from bkcore.layers import compress
from bkcore.layers.compress import CHUNK, DecodedReader, compress_file


def _data() -> bytes:
    rng = random.Random(3)
    return b"".join(bytes(1 << 20) if i % 2 else rng.randbytes(1 << 20) for i in range(6))


class _CountingGzip:
    def __init__(self, inner: Any, calls: list[int]) -> None:
        self._inner = inner
        self._calls = calls

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        self._calls.append(max_length)
        out: bytes = self._inner.decompress(data, max_length)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("kind", ["gzip", "zstd", "uncompressed"])
def test_small_reads_are_served_from_large_decoded_blocks(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = _data()
    if kind == "gzip":
        blob = gzip.compress(plain, 6)
    elif kind == "zstd":
        blob = zstandard.ZstdCompressor(level=3).compress(plain)
    else:
        blob = plain
    calls: list[int] = []
    make = DecodedReader._new_gz
    monkeypatch.setattr(
        DecodedReader, "_new_gz", staticmethod(lambda: _CountingGzip(make(), calls))
    )
    reader = DecodedReader(io.BytesIO(blob))
    parts = []
    while part := reader.read(10240):  # what tarfile's stream mode asks for
        assert len(part) <= 10240
        parts.append(part)
    assert b"".join(parts) == plain
    assert reader.drain() == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert reader.size == len(plain) and reader.compression == kind
    if kind == "gzip":
        # one decompress call per CHUNK of output or CHUNK/4 of input, not one per 10 KiB
        # read (was ~600 here)
        assert len(calls) <= len(plain) // CHUNK + len(blob) // (CHUNK // 4) + 4, len(calls)
        assert set(calls) == {CHUNK}


def test_read_all_and_odd_sizes_mix() -> None:
    plain = _data()
    reader = DecodedReader(io.BytesIO(gzip.compress(plain, 1)))
    got = [reader.read(1), reader.read(513), reader.read(3 << 20), reader.read(-1)]
    while more := reader.read(7777):
        got.append(more)
    assert b"".join(got) == plain
    assert reader.read(10) == b""


def _zstd_blob(plain: bytes, workers: int, monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setattr(compress, "zstd_workers", lambda: workers)
    out = io.BytesIO()
    compress_file(io.BytesIO(plain), out, "zstd")
    return out.getvalue()


def test_zstd_frames_do_not_depend_on_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _data() + os.urandom(12345)
    one = _zstd_blob(plain, 1, monkeypatch)
    four = _zstd_blob(plain, 4, monkeypatch)
    assert one == four
    # zstd's multi-threaded mode (threads=0 writes other frames), whatever the input split
    obj = zstandard.ZstdCompressor(level=3, threads=1).compressobj()
    streamed = b"".join(obj.compress(plain[i : i + 4096]) for i in range(0, len(plain), 4096))
    streamed += obj.flush()
    assert one == streamed
    single = zstandard.ZstdCompressor(level=3, threads=0).compressobj()
    assert one != single.compress(plain) + single.flush()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(one) == plain


def test_zstd_workers_leave_a_cpu_for_the_tar_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert compress.zstd_workers() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert compress.zstd_workers() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert compress.zstd_workers() == 8
