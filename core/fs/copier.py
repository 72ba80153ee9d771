"""Copy one resolved source entry (recursively) onto a destination inside a root.

Symlinks are copied as links, hard links between copied files are kept, modes, owners,
times and xattrs follow the source unless overridden. Nothing is written through a symlink
that already exists in the destination: files and links replace such entries, and a
directory never merges into one (an error). File data moves with ``copy_file_range``
(falling back to ``sendfile``), so the kernel does the copying.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass, field

from bkcore.fs.errors import FileOpError
from bkcore.fs.meta import inroot, set_times
from bkcore.fs.patterns import PathMatcher
from bkcore.fs.users import Owner

_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}
_CHUNK = 1 << 30


def copy_file_data(src_fd: int, dst_fd: int) -> None:
    """Copy from the current offset of *src_fd* to *dst_fd* with kernel calls only.

    ``copy_file_range`` first (reflinks on capable file systems), then ``sendfile``, then
    ``shutil.copyfileobj`` for exotic files; the loop runs once per GiB, not per block.
    """
    use_range = hasattr(os, "copy_file_range")
    while True:
        try:
            if use_range:
                n = os.copy_file_range(src_fd, dst_fd, _CHUNK)
            else:
                n = os.sendfile(dst_fd, src_fd, None, _CHUNK)
        except OSError as exc:
            if exc.errno not in _FALLBACK_ERRNOS:
                raise
            if use_range:
                use_range = False
                continue
            with os.fdopen(os.dup(src_fd), "rb") as fs, os.fdopen(os.dup(dst_fd), "wb") as fd:
                shutil.copyfileobj(fs, fd, 1 << 20)
            return
        if n == 0:
            return


def copy_xattrs(src: str, dst: str) -> None:
    """Copy extended attributes where the file systems allow it (errors are ignored)."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError:
            continue


@dataclass
class _PendingDir:
    src: str
    dst: str
    st: os.stat_result
    overwrite_meta: bool
    materialized: bool = False
    apply_meta: bool = False
    restore_time: bool = False


@dataclass
class Copier:
    """State of one copy: options, the hard-link table and lazily created parents."""

    dest_root: str
    owner: Owner | None = None
    mode: int | None = None
    ns: int | None = None
    matcher: PathMatcher = field(default_factory=PathMatcher)
    replace_dir_with_file: bool = False
    _inodes: dict[tuple[int, int], str] = field(default_factory=dict)
    _pending: list[_PendingDir] = field(default_factory=list)
    _made: set[tuple[int, int]] = field(default_factory=set)  # dirs this copy created

    def _where(self, host_path: str) -> str:
        return inroot(self.dest_root, host_path)

    def never_descend(self, host_dir: str) -> None:
        """Mark a destination directory so that a walk of an enclosing source skips it."""
        st = os.lstat(host_dir)
        self._made.add((st.st_dev, st.st_ino))

    def copy(self, src: str, rel: str, dst: str, overwrite_meta: bool) -> None:
        """Copy host path *src* (relative name *rel* inside the copied tree) to *dst*."""
        st = os.lstat(src)
        is_dir = stat.S_ISDIR(st.st_mode)
        if rel and is_dir and (st.st_dev, st.st_ino) in self._made:
            return  # copying a tree into itself: never walk into the copy
        include = True
        if rel and not self.matcher.selects_all:
            include = self.matcher.matches(rel)
            if not include and not (is_dir and self.matcher.may_descend(rel)):
                return
        if is_dir:
            self._copy_dir(src, rel, dst, st, overwrite_meta, include)
            return
        self._materialize_parents()
        if self._clear_target(dst, st):
            self._apply_meta(src, dst, st)  # the source itself: only metadata can change
            return
        if stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = self._inodes.get(key)
                if first is not None:
                    os.link(first, dst, follow_symlinks=False)
                    return
                self._inodes[key] = dst
            self._copy_file(src, dst, st)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            os.mknod(dst, st.st_mode, st.st_rdev)
        elif stat.S_ISSOCK(st.st_mode):
            return  # sockets are not copied
        else:
            raise FileOpError(f"copy {self._where(dst)}: unsupported file type")
        self._apply_meta(src, dst, st)

    def _copy_file(self, src: str, dst: str, st: os.stat_result) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            dst_fd = os.open(dst, flags, 0o600)
            try:
                copy_file_data(src_fd, dst_fd)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)

    def _clear_target(self, dst: str, src_st: os.stat_result) -> bool:
        """Remove what is at *dst*; True when it is the source file itself (kept)."""
        try:
            st = os.lstat(dst)
        except FileNotFoundError:
            return False
        if (st.st_dev, st.st_ino) == (src_st.st_dev, src_st.st_ino):
            return True
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(dst)
        elif self.replace_dir_with_file:
            shutil.rmtree(dst)
        else:
            raise FileOpError(f"copy {self._where(dst)}: cannot replace a directory with a file")
        return False

    def _copy_dir(
        self, src: str, rel: str, dst: str, st: os.stat_result, overwrite_meta: bool, include: bool
    ) -> None:
        pending = _PendingDir(src, dst, st, overwrite_meta)
        self._pending.append(pending)
        try:
            if include:
                self._materialize_parents(pending)
            for name in sorted(os.listdir(src), key=os.fsencode):
                child_rel = f"{rel}/{name}" if rel else name
                self.copy(os.path.join(src, name), child_rel, os.path.join(dst, name), True)
        finally:
            self._pending.pop()
        if pending.apply_meta:
            self._apply_meta(src, dst, st)
        elif pending.restore_time:
            # fsutil: an existing target directory copied without overwriting its metadata
            # (the top of a copy) still gets the source's (or the set) timestamp back
            if self.ns is not None:
                set_times(dst, self.ns)
            else:
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _materialize_parents(self, current: _PendingDir | None = None) -> None:
        """Create the pending directories on the way to an included entry.

        *current* is a directory included by itself: it gets its metadata after its
        children, as BuildKit's copier does. The others are parents created only because
        something below them is included (fsutil's delayed ``createParentDirs``): a new one
        gets the source's metadata at once (its children then bump its mtime), an existing
        one only the source's mode when metadata may be overwritten.
        """
        for pending in self._pending:
            if pending.materialized:
                continue
            pending.materialized = True
            delayed = pending is not current
            try:
                existing = os.lstat(pending.dst)
            except FileNotFoundError:
                os.mkdir(pending.dst, 0o700)
                made = os.lstat(pending.dst)
                self._made.add((made.st_dev, made.st_ino))
                if delayed:
                    self._apply_meta(pending.src, pending.dst, pending.st)
                else:
                    pending.apply_meta = True
                continue
            if not stat.S_ISDIR(existing.st_mode):
                where = self._where(pending.dst)
                raise FileOpError(f"copy {where}: cannot copy to non-directory")
            if delayed:
                if pending.overwrite_meta:
                    mode = stat.S_IMODE(pending.st.st_mode)
                    os.chmod(pending.dst, mode)
                continue
            pending.apply_meta = pending.overwrite_meta
            pending.restore_time = not pending.overwrite_meta

    def _apply_meta(self, src: str, dst: str, st: os.stat_result) -> None:
        uid, gid = (self.owner.uid, self.owner.gid) if self.owner else (st.st_uid, st.st_gid)
        os.chown(dst, uid, gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            mode = stat.S_IMODE(st.st_mode)
            if self.mode is not None:
                mode = (mode & ~0o777) | (self.mode & 0o777)
            os.chmod(dst, mode)
        copy_xattrs(src, dst)
        if self.ns is not None:
            set_times(dst, self.ns)
        else:
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
