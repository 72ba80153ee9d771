"""The ``tar`` exporter: the result's files as one deterministic tarball on the client.

The archive is built in a thread from a read-only view of the result and streamed to the
client's ``FileSend`` target, which writes it to ``dest`` atomically (temp file + rename)
or to stdout for ``dest=-``. Layout (spec/exporters.md §6): walk order (depth first, names
sorted bytewise), relative names without ``./`` or a root entry, directories with a trailing
``/``, uid/gid kept, uname/gname empty, mode bits with setuid/setgid/sticky, hard links as
typeflag ``1`` pointing at the first path of the inode, xattrs as PAX ``SCHILY.xattr.*``
records, USTAR headers otherwise, mtime rounded to the nearest second (or
``source-date-epoch``), sockets skipped, two zero blocks at the end and no record padding.
The same tree always gives the same bytes.
"""

from __future__ import annotations

import asyncio
import os
import stat
import struct
import tarfile
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import TYPE_CHECKING

from bkcore.errors import ExportError
from bkcore.plugins.exporters.common import client_export

if TYPE_CHECKING:
    from bkcore.exporter import ExportContext
    from bkcore.solver.types import Result

__all__ = ["TarExporter", "tar_chunks"]

VERTEX_NAME = "exporting to client tarball"
#: The status inside the vertex while the archive is sent (BuildKit's wording).
STATUS = "sending tarball"
CHUNK = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _sorted_names(path: str) -> list[str]:
    names = os.listdir(path)
    names.sort(key=os.fsencode)
    return names


def _walk(root: str, rel_dir: str = "") -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative name, host path, lstat) of every entry below ``root``, depth first."""
    abs_dir = os.path.join(root, rel_dir) if rel_dir else root
    for name in _sorted_names(abs_dir):
        rel = f"{rel_dir}/{name}" if rel_dir else name
        host = os.path.join(abs_dir, name)
        st = os.lstat(host)
        yield rel, host, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, rel)


def _xattrs(host: str) -> dict[str, str]:
    try:
        names = os.listxattr(host, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, str] = {}
    for name in sorted(names):
        try:
            value = os.getxattr(host, name, follow_symlinks=False)
        except OSError:
            continue
        out["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return out


def _header(
    rel: str, host: str, st: os.stat_result, epoch: int | None, links: dict[tuple[int, int], str]
) -> tuple[tarfile.TarInfo, bool] | None:
    """The header of one entry and whether its data follows; None for a skipped entry."""
    fmt = stat.S_IFMT(st.st_mode)
    if fmt == stat.S_IFSOCK:
        return None
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    if epoch is not None:
        info.mtime = epoch
    else:
        info.mtime = (st.st_mtime_ns + 500_000_000) // 1_000_000_000
    data = False
    if fmt == stat.S_IFREG:
        first = links.setdefault((st.st_dev, st.st_ino), rel) if st.st_nlink > 1 else rel
        if first != rel:
            info.type = tarfile.LNKTYPE
            info.linkname = first
        else:
            info.type = tarfile.REGTYPE
            info.size = st.st_size
            data = st.st_size > 0
    elif fmt == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
    elif fmt == stat.S_IFLNK:
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(host)
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        info.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif fmt == stat.S_IFIFO:
        info.type = tarfile.FIFOTYPE
    else:
        return None
    info.pax_headers = _xattrs(host)
    return info, data


_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_OCTAL_LIMIT = {8: 8**7, 12: 8**11}


def _num(value: int, digits: int) -> bytes:
    return b"%0*o\0" % (digits - 1, value)


def ustar_header(info: tarfile.TarInfo) -> bytes | None:
    """The 512-byte USTAR header tarfile's PAX format writes for ``info``, built in one
    ``struct.pack``; None when the entry needs PAX records or non-ASCII names (then tarfile
    builds it)."""
    name = info.name + "/" if info.type == tarfile.DIRTYPE else info.name
    if info.pax_headers or not (name.isascii() and info.linkname.isascii()):
        return None
    if len(name) > 100 or len(info.linkname) > 100:
        return None
    if not (
        0 <= info.uid < 8**7
        and 0 <= info.gid < 8**7
        and 0 <= info.size < 8**11
        and 0 <= info.mtime < 8**11
        and 0 <= info.devmajor < 8**7
        and 0 <= info.devminor < 8**7
    ):
        return None
    device = info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE)
    header = bytearray(
        _USTAR.pack(
            name.encode(),
            _num(info.mode & 0o7777, 8),
            _num(info.uid, 8),
            _num(info.gid, 8),
            _num(info.size, 12),
            _num(int(info.mtime), 12),
            b"        ",
            info.type,
            info.linkname.encode(),
            b"ustar\0",
            b"00",
            b"",
            b"",
            _num(info.devmajor, 8) if device else b"",
            _num(info.devminor, 8) if device else b"",
            b"",
        )
    )
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header)


def _file_blocks(host: str, size: int) -> Iterator[bytes]:
    """The file's bytes in large blocks, then its padding to a 512-byte boundary."""
    fd = os.open(host, _READ_FLAGS)
    try:
        left = size
        while left:
            block = os.read(fd, min(CHUNK, left))
            if not block:
                raise ExportError(f"{host} shrank while being archived")
            left -= len(block)
            yield block
    finally:
        os.close(fd)
    pad = -size % _BLOCK
    if pad:
        yield bytes(pad)


def tar_chunks(root: str | Mapping[str, str], *, epoch: int | None = None) -> Iterator[bytes]:
    """The archive of the tree at ``root``, as chunks of about :data:`CHUNK` bytes.

    ``root`` may map top-level directory names to trees (a multi-platform result:
    ``{"linux_amd64": dir, ...}``): each tree goes below its name, a 0755 directory entry."""
    buf = bytearray()
    for info, host in _entries(root, epoch):
        data = info.type == tarfile.REGTYPE and info.size > 0
        buf += ustar_header(info) or info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if data:
            for block in _file_blocks(host, info.size):
                if len(buf) + len(block) > CHUNK and buf:
                    yield bytes(buf)
                    buf.clear()
                if len(block) >= CHUNK:
                    yield block
                else:
                    buf += block
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    buf += bytes(2 * _BLOCK)
    yield bytes(buf)


def _entries(
    root: str | Mapping[str, str], epoch: int | None
) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Headers (and host paths) of every entry of one tree or of named trees in name order."""
    trees = {"": root} if isinstance(root, str) else dict(root)
    for prefix in sorted(trees, key=str.encode):
        links: dict[tuple[int, int], str] = {}
        if prefix:
            if "/" in prefix or prefix in (".", ".."):
                raise ExportError(f"invalid tarball subdirectory name {prefix!r}")
            top = tarfile.TarInfo(prefix)
            top.type, top.mode, top.uname, top.gname = tarfile.DIRTYPE, 0o755, "", ""
            top.mtime = epoch if epoch is not None else 0
            yield top, ""
        for rel, host, st in _walk(trees[prefix]):
            made = _header(rel, host, st, epoch, links)
            if made is None:
                continue
            info = made[0]
            if prefix:
                info.name = f"{prefix}/{info.name}"
                if info.type == tarfile.LNKTYPE:
                    info.linkname = f"{prefix}/{info.linkname}"
            yield info, host


async def _in_thread(chunks: Iterator[bytes]) -> AsyncGenerator[bytes, None]:
    """Advance a blocking chunk iterator in worker threads, one step at a time."""
    loop = asyncio.get_running_loop()
    done = object()
    try:
        while True:
            step = loop.run_in_executor(None, next, chunks, done)
            try:
                item = await asyncio.shield(step)
            except asyncio.CancelledError:
                await asyncio.wait([step])  # never close a generator that is running
                raise
            if item is done:
                return
            assert isinstance(item, bytes)
            yield item
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class TarExporter:
    """:class:`bkcore.exporter.Exporter` writing a tarball to a client file or stdout."""

    async def export(
        self, ctx: ExportContext, result: Result | None, attrs: Mapping[str, str]
    ) -> Mapping[str, str]:
        from bkcore.session.filesync import send_file_to_client

        async with client_export(
            ctx, result, attrs, output="output type=tar", name=VERTEX_NAME
        ) as out:
            assert out.vertex is not None
            chunks = _in_thread(tar_chunks(out.tree, epoch=out.epoch))
            try:
                async with out.vertex.step(STATUS):
                    await send_file_to_client(out.caller, chunks)
            finally:
                await chunks.aclose()
        return {}
