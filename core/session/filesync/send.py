"""The daemon side of FileSend: deliver an export to the client (session.md §5.4).

Directory outputs use the diffcopy protocol with the daemon as sender; file outputs (tar and
friends) are raw bytes in ``BytesMessage`` chunks. The client side (the attachable receiving
them) is ``bkcore.sessions.filesync.filesend.FileSendTarget``; both use :data:`FILESEND`.
"""

from __future__ import annotations

import asyncio
import stat as st
from collections.abc import AsyncIterable, Mapping

from bkcore.errors import SessionError
from bkcore.session.filesync.packets import GO_SYMLINK, BytesMessage, Packet, Stat, go_mode
from bkcore.session.filesync.sender import SendStats, send_diffcopy
from bkcore.session.filesync.walker import Entry, walk
from bkcore.session.transport import Caller

__all__ = ["FILESEND", "send_dir_to_client", "send_dirs_to_client", "send_file_to_client"]

FILESEND = "/moby.filesync.v1.FileSend/DiffCopy"


async def send_dir_to_client(
    caller: Caller, src_dir: str, *, mod_time_ns: int | None = None
) -> SendStats:
    """Export ``src_dir`` to the client's output directory (owners are sent as they are).

    ``mod_time_ns`` replaces every entry's mtime (``source-date-epoch``).
    """
    if not caller.supports(FILESEND):
        raise SessionError(f"method {FILESEND} not supported by the client")
    entries = await asyncio.to_thread(walk, src_dir, keep_owner=True)
    if mod_time_ns is not None:
        for entry in entries:
            entry.stat.mod_time = mod_time_ns
    async with caller.open_stream(FILESEND, Packet) as stream:
        return await send_diffcopy(stream, entries)


async def send_dirs_to_client(
    caller: Caller, src_dirs: Mapping[str, str], *, mod_time_ns: int | None = None
) -> SendStats:
    """Export several trees as top-level subdirectories of the client's output directory
    (a multi-platform result: ``{"linux_amd64": dir, ...}``, spec/exporters.md §6). Each
    subdirectory is sent as a 0755 directory; paths and hard-link targets below it are
    prefixed with its name."""
    if not caller.supports(FILESEND):
        raise SessionError(f"method {FILESEND} not supported by the client")

    def listing() -> list[Entry]:
        out: list[Entry] = []
        for name in sorted(src_dirs, key=str.encode):
            if not name or "/" in name or name in (".", ".."):
                raise SessionError(f"invalid export subdirectory name {name!r}")
            src = src_dirs[name]
            top = Stat(name, go_mode(st.S_IFDIR | 0o755), 0, 0, 0, mod_time_ns or 0)
            out.append(Entry(top, src))
            for entry in walk(src, keep_owner=True):
                s = entry.stat
                if s.linkname and not (s.mode & GO_SYMLINK):
                    s.linkname = f"{name}/{s.linkname}"  # a hard link names its first path
                s.path = f"{name}/{s.path}"
                out.append(entry)
        return out

    entries = await asyncio.to_thread(listing)
    if mod_time_ns is not None:
        for entry in entries:
            entry.stat.mod_time = mod_time_ns
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
