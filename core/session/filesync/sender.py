"""The sending side of diffcopy: list entries, then answer the receiver's requests.

Used by the client for ``FileSync.DiffCopy`` and by the daemon for ``FileSend.DiffCopy``
directory exports. Requested files are read in threads, several small files per thread hop,
by four workers (so up to four files are in flight, as in Go), and sent as ``DATA`` chunks
followed by an empty ``DATA``. A request whose data is ``sha256`` gets a ``HASH`` packet
with the file's digest instead (bkcore extension, see :mod:`.receiver`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from bkcore.errors import SessionError
from bkcore.session.filesync.packets import Packet, PacketType
from bkcore.session.filesync.receiver import HASH_REQUEST, PacketStream
from bkcore.session.filesync.walker import Entry
from bkcore.session.tasks import run_together

__all__ = ["CHUNK_SIZE", "SendStats", "send_diffcopy"]

CHUNK_SIZE = 32 * 1024
_WORKERS = 4
_BATCH_FILES = 64
_BATCH_BYTES = 4 << 20
_BLOCK = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class SendStats:
    entries: int = 0
    files_sent: int = 0
    bytes_sent: int = 0
    hashes_sent: int = 0


def _read_small(path: str) -> bytes:
    fd = os.open(path, _READ_FLAGS)
    try:
        parts = []
        while block := os.read(fd, _BLOCK):
            parts.append(block)
        return b"".join(parts)
    finally:
        os.close(fd)


def _hash(path: str) -> bytes:
    fd = os.open(path, _READ_FLAGS)
    with os.fdopen(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _read_batch(jobs: Sequence[tuple[str, bool, int]]) -> list[bytes | None]:
    """Hash or read each job; ``None`` marks a large file to be streamed separately."""
    out: list[bytes | None] = []
    for path, want_hash, size in jobs:
        if want_hash:
            out.append(_hash(path))
        elif size > _BATCH_BYTES:
            out.append(None)
        else:
            out.append(_read_small(path))
    return out


class _PeerError(SessionError):
    pass


async def send_diffcopy(
    stream: PacketStream, entries: Sequence[Entry], *, chunk_size: int = CHUNK_SIZE
) -> SendStats:
    """Send ``entries`` (from :func:`~.walker.walk`) and serve requests until ``FIN``."""
    stats = SendStats(entries=len(entries))
    work: asyncio.Queue[tuple[int, bool] | None] = asyncio.Queue()

    async def send_data(ident: int, data: bytes) -> None:
        for off in range(0, len(data), chunk_size):
            await stream.send(Packet(PacketType.DATA, id=ident, data=data[off : off + chunk_size]))
        stats.bytes_sent += len(data)

    async def send_big(ident: int, path: str) -> None:
        fd = await asyncio.to_thread(os.open, path, _READ_FLAGS)
        try:
            offset = 0
            while block := await asyncio.to_thread(os.pread, fd, _BLOCK, offset):
                offset += len(block)
                await send_data(ident, block)
        finally:
            os.close(fd)

    async def listing() -> None:
        for e in entries:
            await stream.send(Packet(PacketType.STAT, stat=e.stat))
        await stream.send(Packet())

    async def worker() -> None:
        stop = False
        while not stop:
            item = await work.get()
            if item is None:
                return
            batch = [item]
            total = entries[item[0]].stat.size
            while len(batch) < _BATCH_FILES and total < _BATCH_BYTES and not work.empty():
                nxt = work.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                total += entries[nxt[0]].stat.size
            jobs = [(entries[i].abspath, h, entries[i].stat.size) for i, h in batch]
            try:
                results = await asyncio.to_thread(_read_batch, jobs)
            except OSError as exc:
                raise SessionError(f"reading a requested file failed: {exc}") from exc
            for (ident, want_hash), result in zip(batch, results, strict=True):
                if want_hash:
                    assert result is not None
                    stats.hashes_sent += 1
                    await stream.send(Packet(PacketType.HASH, id=ident, data=result))
                    continue
                stats.files_sent += 1
                if result is None:
                    await send_big(ident, entries[ident].abspath)
                else:
                    await send_data(ident, result)
                await stream.send(Packet(PacketType.DATA, id=ident))

    async def reader() -> None:
        while True:
            p = await stream.recv()
            if p is None:
                raise SessionError("receiver ended the stream before finishing")
            if p.type == PacketType.REQ:
                ident = p.id
                if not 0 <= ident < len(entries):
                    raise SessionError(f"receiver requested unknown id {ident}")
                s = entries[ident].stat
                if not s.is_regular() or s.linkname:
                    raise SessionError(f"receiver requested {s.path!r}, which is not a file")
                work.put_nowait((ident, p.data == HASH_REQUEST))
            elif p.type == PacketType.FIN:
                break
            elif p.type == PacketType.ERR:
                raise _PeerError(f"receiver failed: {p.data.decode('utf-8', 'replace')}")
            else:
                raise SessionError(f"unexpected packet type {p.type} from the receiver")
        for _ in range(_WORKERS):
            work.put_nowait(None)

    try:
        await run_together(listing(), reader(), *(worker() for _ in range(_WORKERS)))
    except SessionError as exc:
        if not isinstance(exc, _PeerError):
            try:
                msg = Packet(PacketType.ERR, data=str(exc).encode())
                await asyncio.wait_for(stream.send(msg), 1.0)
            except (TimeoutError, SessionError):
                pass
        raise
    await stream.send(Packet(PacketType.FIN))
    return stats
