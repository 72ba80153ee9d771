"""Blocking writes into a receiver's destination tree, confined to it.

Every operation works relative to directory file descriptors opened one component at a time
with ``O_NOFOLLOW``, so neither a symlink in the tree nor a hostile path can redirect a write
outside the root. Files are written to a temporary name in their directory and renamed into
place when complete: a failed or interrupted sync leaves each path either old or new, never
half-written (leftover temporaries are removed by the next sync as unlisted entries).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import stat as st
from dataclasses import dataclass

from bkcore.errors import SessionError
from bkcore.session.filesync.packets import Stat, posix_mode

__all__ = ["DestTree", "Existing", "scan"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_PREFIX = ".bksync-"


@dataclass(slots=True)
class Existing:
    """What the destination held for a path before this sync."""

    stat: os.stat_result
    link: str | None = None


def scan(root: str) -> dict[str, Existing]:
    """lstat every entry under ``root`` (symlinks not followed) keyed by relative path.

    Parents come before their children. Entries are stat'ed relative to an open descriptor
    of their directory, which spares the kernel a full path lookup per entry.
    """
    out: dict[str, Existing] = {}
    is_dir, is_link = st.S_ISDIR, st.S_ISLNK

    def visit(prefix: str, dfd: int) -> None:
        for name in os.listdir(dfd):
            try:
                s = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:  # removed while we looked
                continue
            rel = prefix + name
            mode = s.st_mode
            if is_dir(mode):
                out[rel] = Existing(s)
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                try:
                    visit(rel + "/", fd)
                finally:
                    os.close(fd)
            elif is_link(mode):
                out[rel] = Existing(s, os.readlink(name, dir_fd=dfd))
            else:
                out[rel] = Existing(s)

    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return out
    try:
        visit("", root_fd)
    finally:
        os.close(root_fd)
    return out


def _split(rel: str) -> tuple[str, str]:
    head, _, tail = rel.rpartition("/")
    return head, tail


class _OpenFile:
    __slots__ = ("fd", "hasher", "size", "stat", "tmp")

    def __init__(self, fd: int, tmp: str, stat: Stat) -> None:
        self.fd = fd
        self.tmp = tmp
        self.stat = stat
        self.hasher = hashlib.sha256()
        self.size = 0


class DestTree:
    """Mutations of one destination directory; not thread-safe (one writer thread)."""

    def __init__(self, root: str, *, apply_owner: bool) -> None:
        os.makedirs(root, exist_ok=True)
        self.root = root
        self.apply_owner = apply_owner
        self._fds: dict[str, int] = {"": os.open(root, _DIR_FLAGS)}
        self._open: dict[int, _OpenFile] = {}

    # -- directory descriptors --------------------------------------------------------------

    def dir_fd(self, rel_dir: str) -> int:
        fd = self._fds.get(rel_dir)
        if fd is not None:
            return fd
        head, name = _split(rel_dir)
        parent = self.dir_fd(head)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise SessionError(f"refusing to write below {rel_dir!r}: not a directory") from exc
            raise
        self._fds[rel_dir] = fd
        return fd

    def _forget(self, rel: str) -> None:
        prefix = rel + "/"
        for key in [k for k in self._fds if k == rel or k.startswith(prefix)]:
            os.close(self._fds.pop(key))

    def _tmp_name(self) -> str:
        return f"{_TMP_PREFIX}{secrets.token_hex(6)}"

    def _lstat(self, rel: str) -> os.stat_result | None:
        try:
            return self.lstat(rel)
        except FileNotFoundError:
            return None

    def lstat(self, rel: str) -> os.stat_result:
        head, name = _split(rel)
        return os.stat(name, dir_fd=self.dir_fd(head), follow_symlinks=False)

    # -- operations (each called from the writer thread) -----------------------------------

    def remove(self, rel: str) -> None:
        head, name = _split(rel)
        pfd = self.dir_fd(head)
        self._forget(rel)
        try:
            s = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if st.S_ISDIR(s.st_mode):
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)

    def _clear_dir_for(self, rel: str) -> None:
        """A non-directory is about to replace ``rel``: remove a directory in its way."""
        s = self._lstat(rel)
        if s is not None and st.S_ISDIR(s.st_mode):
            self.remove(rel)

    def mkdir(self, rel: str) -> None:
        s = self._lstat(rel)
        if s is not None:
            if st.S_ISDIR(s.st_mode):
                return
            self.remove(rel)
        head, name = _split(rel)
        os.mkdir(name, 0o700, dir_fd=self.dir_fd(head))

    def symlink(self, rel: str, stat: Stat) -> None:
        self._clear_dir_for(rel)
        head, name = _split(rel)
        pfd = self.dir_fd(head)
        tmp = self._tmp_name()
        os.symlink(stat.linkname, tmp, dir_fd=pfd)
        try:
            self._apply_meta(tmp, pfd, stat, symlink=True)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            os.unlink(tmp, dir_fd=pfd)
            raise

    def special(self, rel: str, stat: Stat) -> None:
        """Devices and named pipes."""
        self._clear_dir_for(rel)
        head, name = _split(rel)
        pfd = self.dir_fd(head)
        tmp = self._tmp_name()
        mode = posix_mode(stat.mode)
        os.mknod(tmp, mode, os.makedev(stat.devmajor, stat.devminor), dir_fd=pfd)
        try:
            self._apply_meta(tmp, pfd, stat)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            os.unlink(tmp, dir_fd=pfd)
            raise

    def hardlink(self, rel: str, target: str) -> None:
        self._clear_dir_for(rel)
        head, name = _split(rel)
        thead, tname = _split(target)
        pfd, tfd = self.dir_fd(head), self.dir_fd(thead)
        tmp = self._tmp_name()
        os.link(tname, tmp, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        try:
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            os.unlink(tmp, dir_fd=pfd)
            raise

    def begin(self, ident: int, rel: str, stat: Stat) -> None:
        head, _ = _split(rel)
        tmp = self._tmp_name()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=self.dir_fd(head))
        self._open[ident] = _OpenFile(fd, tmp, stat)

    def write(self, ident: int, data: bytes) -> None:
        f = self._open[ident]
        view = memoryview(data)
        while view:
            n = os.write(f.fd, view)
            view = view[n:]
        f.hasher.update(data)
        f.size += len(data)

    def finish(self, ident: int, rel: str) -> tuple[str, os.stat_result]:
        """Complete a file: metadata, rename into place; returns (sha256 hex, final lstat)."""
        f = self._open.pop(ident)
        head, name = _split(rel)
        pfd = self.dir_fd(head)
        try:
            self._apply_meta_fd(f.fd, f.stat, fresh=True)
        finally:
            os.close(f.fd)
        try:
            self._clear_dir_for(rel)
            os.rename(f.tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            os.unlink(f.tmp, dir_fd=pfd)
            raise
        return f.hasher.hexdigest(), os.stat(name, dir_fd=pfd, follow_symlinks=False)

    def set_meta(self, rel: str, stat: Stat) -> os.stat_result:
        """Rewrite mode, owner, xattrs and times of an existing entry."""
        head, name = _split(rel)
        pfd = self.dir_fd(head)
        self._apply_meta(name, pfd, stat, symlink=stat.is_symlink())
        return os.stat(name, dir_fd=pfd, follow_symlinks=False)

    def abort(self) -> None:
        """Drop every half-written file."""
        for f in self._open.values():
            os.close(f.fd)
            try:
                os.unlink(f.tmp, dir_fd=self.dir_fd(_split(f.stat.path)[0]))
            except OSError:
                pass
        self._open.clear()

    def close(self) -> None:
        self.abort()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    # -- metadata -----------------------------------------------------------------------------

    def _apply_meta_fd(self, fd: int, stat: Stat, *, fresh: bool = False) -> None:
        if self.apply_owner:
            os.fchown(fd, stat.uid, stat.gid)
        os.fchmod(fd, posix_mode(stat.mode) & 0o7777)
        for key, value in stat.xattrs.items():
            try:
                os.setxattr(fd, key, value)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
        if not fresh:  # drop user xattrs the sender no longer has
            try:
                names = os.listxattr(fd)
            except OSError:
                names = []
            for key in names:
                if key.startswith("user.") and key not in stat.xattrs:
                    os.removexattr(fd, key)
        os.utime(fd, ns=(stat.mod_time, stat.mod_time))

    def _apply_meta(self, name: str, pfd: int, stat: Stat, *, symlink: bool = False) -> None:
        times = (stat.mod_time, stat.mod_time)
        if symlink:
            if self.apply_owner:
                os.chown(name, stat.uid, stat.gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(name, ns=times, dir_fd=pfd, follow_symlinks=False)
        elif stat.is_dir() or stat.is_regular():
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            if stat.is_dir():
                flags |= os.O_DIRECTORY
            fd = os.open(name, flags, dir_fd=pfd)
            try:
                self._apply_meta_fd(fd, stat)
            finally:
                os.close(fd)
        else:  # a device or pipe this sync just created under a temporary name
            if self.apply_owner:
                os.chown(name, stat.uid, stat.gid, dir_fd=pfd, follow_symlinks=False)
            os.chmod(name, posix_mode(stat.mode) & 0o7777, dir_fd=pfd)
            os.utime(name, ns=times, dir_fd=pfd, follow_symlinks=False)


def hash_existing(root: str, rel: str) -> str:
    """sha256 of the regular file ``rel`` under ``root``, opened without following links."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        parts = rel.split("/")
        for part in parts[:-1]:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(ffd, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
