"""Streaming layer compression (gzip, zstd, none) and decompression by magic bytes.

gzip uses ISA-L (``isal``) when it is installed, else zlib, and writes the header Go's
``compress/gzip`` writes (``1f8b 0800 00000000 00 ff``: no name, mtime 0, OS unknown).
Levels are Go gzip levels as BuildKit's ``compression-level`` takes them: the default (6)
and 3-6 map to ISA-L's levels 3/2, 1-2 to ISA-L 1, -2 (Huffman only) to ISA-L 0; 7-9 ask
for ratio over speed and use zlib at that level. zstd uses the ``zstandard`` package at
level 3 by default (a BuildKit level maps to zstd presets: <3 fastest=1, 3-6 default=3, 7-8
better=7, >=9 best=11) in zstd's multi-threaded mode (output does not depend on the number
of workers).
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, BinaryIO, Literal

from bkcore.errors import ExportError
from bkcore.layers.write import CHUNK, DigestWriter, TarInfo, Writable

Compression = Literal["gzip", "zstd", "uncompressed"]
COMPRESSIONS: tuple[Compression, ...] = ("gzip", "zstd", "uncompressed")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GO_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: diff ID of an empty layer tar (two zero blocks).
EMPTY_LAYER_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
#: What Go's ``compress/gzip`` (level 6) writes for the empty layer tar: BuildKit's 32-byte
#: ``sha256:4f4fb700...`` blob. zlib and ISA-L encode the same 1024 zero bytes differently.
GO_EMPTY_GZIP = _GO_GZIP_HEADER + bytes.fromhex("621805a360148c5800080000ffff2eafb5ef00040000")

_MEDIA = {
    ("gzip", True): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("zstd", True): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("uncompressed", True): "application/vnd.oci.image.layer.v1.tar",
    ("gzip", False): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("zstd", False): "application/vnd.docker.image.rootfs.diff.tar.zstd",
    ("uncompressed", False): "application/vnd.docker.image.rootfs.diff.tar",
}


def media_type(compression: Compression, *, oci: bool) -> str:
    """The layer media type for ``compression`` in the OCI or Docker family."""
    return _MEDIA[(compression, oci)]


def check_compression(name: str) -> Compression:
    if name not in COMPRESSIONS:
        raise ExportError(f"unknown compression {name!r} (want gzip, zstd or uncompressed)")
    return name


@dataclass(frozen=True, slots=True)
class CompressedBlob:
    """A layer blob: digest and size of the stored bytes, diff ID of the tar inside."""

    digest: str
    size: int
    diff_id: str
    compression: Compression


def _isal() -> ModuleType | None:
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return isal_zlib


def _deflater(level: int | None) -> Any:
    go = 6 if level is None or level == -1 else level
    isal = _isal()
    if not -2 <= go <= 9:
        raise ExportError(f"invalid gzip compression level {level} (want -2..9)")
    if go == 0:
        return zlib.compressobj(0, zlib.DEFLATED, -15)
    if isal is not None and go <= 6:
        isal_level = 0 if go == -2 else 1 if go <= 2 else 2 if go <= 5 else 3
        return isal.compressobj(isal_level, zlib.DEFLATED, -15)
    return zlib.compressobj(max(go, 1), zlib.DEFLATED, -15)


def zstd_level(level: int | None) -> int:
    if level is None or level < 0:
        return 3
    return 1 if level < 3 else 3 if level <= 6 else 7 if level <= 8 else 11


class _GzipWriter:
    def __init__(self, out: Writable, level: int | None) -> None:
        self._out = out
        self._deflate = _deflater(level)
        isal = _isal()
        self._crc32: Callable[[bytes, int], int] = isal.crc32 if isal is not None else zlib.crc32
        self._crc = 0
        self._size = 0
        out.write(_GO_GZIP_HEADER)

    def write(self, data: bytes) -> int:
        self._crc = self._crc32(data, self._crc)
        self._size += len(data)
        packed = self._deflate.compress(data)
        if packed:
            self._out.write(packed)
        return len(data)

    def close(self) -> None:
        self._out.write(self._deflate.flush())
        self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))


def zstd_workers() -> int:
    """zstd worker threads for compression: one per CPU but one (left to the tar writer)."""
    return max(1, min((os.cpu_count() or 1) - 1, 8))


class _ZstdWriter:
    """zstd in its multi-threaded mode: the compression runs in zstd's own worker threads
    (no GIL), beside the thread that feeds it. The frames depend on the level only, not on
    the number of workers or on how the input is split into writes (zstd's jobs have a fixed
    size), so a layer compresses to the same bytes on every machine. The single-threaded
    mode (``threads=0``) would write different frames; it is never used."""

    def __init__(self, out: Writable, level: int | None) -> None:
        import zstandard

        self._out = out
        cctx = zstandard.ZstdCompressor(level=zstd_level(level), threads=zstd_workers())
        self._obj = cctx.compressobj()

    def write(self, data: bytes) -> int:
        packed = self._obj.compress(data)
        if packed:
            self._out.write(packed)
        return len(data)

    def close(self) -> None:
        # zstd holds up to a few jobs of output until the end: hand it on in blocks
        rest = self._obj.flush()
        for start in range(0, len(rest), CHUNK):
            self._out.write(rest[start : start + CHUNK])


class _Plain:
    def __init__(self, out: Writable) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        self._out.write(data)
        return len(data)

    def close(self) -> None:
        pass


class _Counted:
    """Hashes and counts the compressed bytes on their way to the file."""

    def __init__(self, out: Writable) -> None:
        self._out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)


def compress_tar(
    produce: Callable[[Writable], TarInfo | None],
    out: Writable,
    compression: Compression,
    *,
    level: int | None = None,
) -> CompressedBlob:
    """Run ``produce(sink)`` (it writes a tar into ``sink``) and compress what it writes into
    ``out`` in one pass; returns the blob's digest and size and the tar's diff ID.
    Blocking: run in a thread."""
    counted = _Counted(out)
    comp: _GzipWriter | _ZstdWriter | _Plain
    if compression == "gzip":
        comp = _GzipWriter(counted, level)
    elif compression == "zstd":
        comp = _ZstdWriter(counted, level)
    else:
        comp = _Plain(counted)
    if compression == "uncompressed":
        tar = DigestWriter(comp)
        produce(tar)
        diff_id = tar.close()
    else:
        # The tar side (reading files, hashing the diff ID) and the compressing side
        # (deflate/zstd, hashing and writing the blob) run in two threads; both release
        # the GIL in their C calls, so they overlap.
        pipe = _Pipe(comp)
        tar = DigestWriter(pipe)
        try:
            produce(tar)
            diff_id = tar.close()
        finally:
            pipe.close()
    comp.close()
    return CompressedBlob("sha256:" + counted.hash.hexdigest(), counted.size, diff_id, compression)


class _Pipe:
    """Hands large blocks to a thread that writes them to ``sink`` (bounded queue)."""

    def __init__(self, sink: Writable) -> None:
        self._sink = sink
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="layer-compress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._sink.write(block)
                except BaseException as exc:  # handed to the producer thread
                    self._error = exc

    def write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        self._queue.put(data)
        return len(data)

    def close(self) -> None:
        """Wait for the queued blocks; raise what the writing thread hit."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def compress_file(
    src: BinaryIO, out: Writable, compression: Compression, *, level: int | None = None
) -> CompressedBlob:
    """Compress an uncompressed tar stream ``src`` (for example a layer written earlier)."""

    def copy(sink: Writable) -> None:
        while block := src.read(CHUNK):
            sink.write(block)

    return compress_tar(copy, out, compression, level=level)


class CorruptBlobError(ValueError):
    """The compressed bytes of a blob cannot be decoded."""


class DecodedReader:
    """A file-like ``read`` over a layer blob's uncompressed bytes, whatever the blob's
    compression (found from its first bytes); hashes the uncompressed bytes for the diff ID.

    Bytes are decoded in blocks of at most :data:`CHUNK` (so a small blob that expands hugely
    is held a block at a time) and small reads (``tarfile`` asks for 10 KiB) are served from
    the current block: the decoder and the hash see large calls whatever the reader asks for
    (before, each 10 KiB read copied gzip's unconsumed input tail of up to 256 KiB).
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        head = raw.read(4)
        self._pending = head
        self._hash = hashlib.sha256()
        self.size = 0
        self._eof = False
        self._block: bytes = b""
        self._pos = 0
        self._zreader: Any = None
        self._gz: Any = None
        if head.startswith(GZIP_MAGIC):
            self.compression: Compression = "gzip"
            self._gz = self._new_gz()
        elif head.startswith(ZSTD_MAGIC):
            import zstandard

            self.compression = "zstd"
            self._zreader = zstandard.ZstdDecompressor().stream_reader(
                _Prefixed(head, raw),  # type: ignore[arg-type]  # read() is all it uses
                read_size=CHUNK // 4,
                read_across_frames=True,
            )
            self._pending = b""
        else:
            self.compression = "uncompressed"

    @staticmethod
    def _new_gz() -> Any:
        isal = _isal()
        return (isal or zlib).decompressobj(31)

    def _gzip_block(self) -> bytes:
        while True:
            if self._gz.unconsumed_tail:
                data = self._gz.decompress(self._gz.unconsumed_tail, CHUNK)
            else:
                if self._gz.eof:
                    rest = self._gz.unused_data or self._raw.read(CHUNK // 4)
                    if not rest:
                        return b""
                    self._gz = self._new_gz()
                    data = self._gz.decompress(rest, CHUNK)
                else:
                    chunk = self._pending or self._raw.read(CHUNK // 4)
                    self._pending = b""
                    if not chunk:
                        raise zlib.error("truncated gzip stream")
                    data = self._gz.decompress(chunk, CHUNK)
            if data:
                return bytes(data)

    def _decode(self) -> bytes:
        """The next block of uncompressed bytes (hashed and counted), b"" at the end."""
        try:
            if self._gz is not None:
                data = self._gzip_block()
            elif self._zreader is not None:
                data = self._zreader.read(CHUNK)
            else:
                data = self._pending + self._raw.read(CHUNK - len(self._pending))
                self._pending = b""
        except OSError:
            raise
        except Exception as exc:  # zlib.error, IsalError, ZstdError: corrupt data
            raise CorruptBlobError(f"corrupt {self.compression} data: {exc}") from exc
        if data:
            self._hash.update(data)
            self.size += len(data)
        return data

    def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._block):
            if self._eof:
                return b""
            block = self._decode()
            if not block:
                self._eof = True
                return b""
            self._block, self._pos = block, 0
        if n is None or n < 0 or (self._pos == 0 and n >= len(self._block)):
            data = self._block[self._pos :] if self._pos else self._block
            self._pos = len(self._block)
            return data
        data = self._block[self._pos : self._pos + max(n, 1)]
        self._pos += len(data)
        return data

    def drain(self) -> str:
        """Read to the end; return the ``sha256:`` diff ID of all uncompressed bytes."""
        while self.read(CHUNK):
            pass
        return "sha256:" + self._hash.hexdigest()


class _Prefixed:
    """``raw`` with the bytes already read from it put back in front."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            if n is None or n < 0:
                return head + self._raw.read()
            return head + self._raw.read(max(n - len(head), 0))
        return self._raw.read(n)
