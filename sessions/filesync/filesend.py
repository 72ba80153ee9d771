"""FileSend, client side: receive the daemon's exports (session.md §5.4).

Directory outputs arrive with the diffcopy protocol (the daemon sends, see
:func:`bkcore.session.filesync.send_dir_to_client`); the client keeps its own ownership and
replaces its output directory only once the whole export has arrived. File outputs (tar and
friends) are raw bytes in ``BytesMessage`` chunks, written to a temporary file that is renamed
into place only when the stream ends cleanly.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import stat
import sys
import tempfile
from collections.abc import Mapping
from typing import BinaryIO

from bkcore.cache.fsutil import remove
from bkcore.errors import SessionError
from bkcore.session.filesync.packets import BytesMessage, Packet
from bkcore.session.filesync.receiver import receive_diffcopy
from bkcore.session.filesync.send import FILESEND
from bkcore.session.transport import Handler, Metadata, ServerStream

__all__ = ["FileSendTarget"]


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
        """Receive into a temporary sibling of ``dest_dir``, then swap it into place.

        Unlike BuildKit's client (which merges into the directory as files arrive), a failed
        or cancelled export leaves the old destination exactly as it was, and a successful
        one replaces it whole (files that are not in the result do not linger).
        """
        assert self.dest_dir is not None
        self.metadata = stream.metadata
        dest = os.path.realpath(self.dest_dir)
        # Created in the loop (a few syscalls) rather than in a thread: a cancellation that
        # arrives while a thread creates it would leave the directory behind.
        tmp = _sibling_dir(dest)
        try:
            await receive_diffcopy(stream, tmp, delete=False, apply_owner=False)
            await asyncio.to_thread(_swap_into_place, tmp, dest)
        except BaseException:
            remove(tmp)  # blocking, on the failure path only (also when cancelled)
            raise

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
        # one open(O_EXCL) in the loop: cancelled while a thread made it, it would be left
        fd, tmp = tempfile.mkstemp(prefix=".bkexport-", dir=directory)
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


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _sibling_dir(dest: str) -> str:
    """A new empty directory beside ``dest`` (parents created), with the mode ``dest`` has or
    a fresh ``mkdir`` would get."""
    parent = os.path.dirname(dest)
    try:
        s = os.lstat(dest)
    except FileNotFoundError:
        s = None
    if s is not None and not stat.S_ISDIR(s.st_mode):
        raise SessionError(f"cannot export to {dest}: it exists and is not a directory")
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(dest)}.bkexport-{secrets.token_hex(6)}")
    os.mkdir(tmp, 0o777)  # the umask applies, as for any new directory
    if s is not None:
        os.chmod(tmp, stat.S_IMODE(s.st_mode))
    return tmp


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (``renameat2(RENAME_EXCHANGE)``); False when unsupported."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def _swap_into_place(tmp: str, dest: str) -> None:
    """Make the complete tree ``tmp`` become ``dest``; the old ``dest`` is removed after."""
    try:
        os.rename(tmp, dest)  # no dest yet (or an empty one): done in one step
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if _exchange(tmp, dest):
        remove(tmp)  # now the old tree
        return
    old = f"{tmp}.old"
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    remove(old)
