"""FileSend: the daemon delivers exports to the client (session.md §5.4).

Directory outputs use the diffcopy protocol with the daemon as sender; the client merges
into its output directory (nothing is deleted) and keeps its own ownership. File outputs
(tar and friends) are raw bytes in ``BytesMessage`` chunks, written to a temporary file that
is renamed into place only when the stream ends cleanly.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import AsyncIterable, Mapping
from typing import BinaryIO

from bkcore.errors import SessionError
from bkcore.session.transport import Caller, Handler, Metadata, ServerStream
from bkcore.sessions.filesync.packets import BytesMessage, Packet
from bkcore.sessions.filesync.receiver import receive_diffcopy
from bkcore.sessions.filesync.sender import SendStats, send_diffcopy
from bkcore.sessions.filesync.walker import walk

__all__ = ["FILESEND", "FileSendTarget", "send_dir_to_client", "send_file_to_client"]

FILESEND = "/moby.filesync.v1.FileSend/DiffCopy"


class FileSendTarget:
    """Client-side attachable receiving one export: a directory, a file, or stdout."""

    def __init__(
        self, *, dest_dir: str | None = None, file: str | None = None, stdout: bool = False
    ) -> None:
        if sum((dest_dir is not None, file is not None, stdout)) != 1:
            raise SessionError("FileSendTarget needs exactly one of dest_dir, file or stdout")
        self.dest_dir = os.path.abspath(dest_dir) if dest_dir is not None else None
        self.file = os.path.abspath(file) if file is not None else None
        self.stdout = stdout
        self.metadata = Metadata()

    def handlers(self) -> Mapping[str, Handler]:
        if self.dest_dir is not None:
            return {FILESEND: Handler("stream", self._receive_dir, Packet, Packet)}
        return {FILESEND: Handler("stream", self._receive_file, BytesMessage, BytesMessage)}

    async def _receive_dir(self, stream: ServerStream) -> None:
        assert self.dest_dir is not None
        self.metadata = stream.metadata
        await receive_diffcopy(stream, self.dest_dir, delete=False, apply_owner=False)

    async def _receive_file(self, stream: ServerStream) -> None:
        self.metadata = stream.metadata
        if self.stdout:
            out = sys.stdout.buffer
            while (msg := await stream.recv()) is not None:
                await asyncio.to_thread(out.write, msg.data)
            await asyncio.to_thread(out.flush)
            return
        assert self.file is not None
        directory = os.path.dirname(self.file)
        fd, tmp = await asyncio.to_thread(tempfile.mkstemp, prefix=".bkexport-", dir=directory)
        f: BinaryIO = os.fdopen(fd, "wb")
        try:
            while (msg := await stream.recv()) is not None:
                await asyncio.to_thread(f.write, msg.data)
            await asyncio.to_thread(f.close)
            await asyncio.to_thread(os.replace, tmp, self.file)
        except BaseException:
            f.close()
            os.unlink(tmp)
            raise


async def send_dir_to_client(caller: Caller, src_dir: str) -> SendStats:
    """Export ``src_dir`` to the client's output directory (owners are sent as they are)."""
    if not caller.supports(FILESEND):
        raise SessionError(f"method {FILESEND} not supported by the client")
    entries = await asyncio.to_thread(walk, src_dir, keep_owner=True)
    async with caller.open_stream(FILESEND, Packet) as stream:
        return await send_diffcopy(stream, entries)


async def send_file_to_client(
    caller: Caller, chunks: AsyncIterable[bytes], metadata: Mapping[str, str] | None = None
) -> int:
    """Stream an archive to the client's output file; returns the byte count."""
    if not caller.supports(FILESEND):
        raise SessionError(f"method {FILESEND} not supported by the client")
    md = [(f"exporter-md-{k}", v) for k, v in (metadata or {}).items()]
    total = 0
    async with caller.open_stream(FILESEND, BytesMessage, md) as stream:
        async for chunk in chunks:
            if chunk:
                total += len(chunk)
                await stream.send(BytesMessage(chunk))
    return total
