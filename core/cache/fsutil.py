"""File tree helpers for snapshots: copy with metadata, remove, measure, compare metadata.

Regular file bytes are copied by the kernel (``shutil.copyfile`` uses ``sendfile``); owners,
modes, times, extended attributes, symlinks, device nodes, fifos and hard links are kept.
Overlay's private ``trusted.overlay.*`` attributes never leave a layer.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

_OVERLAY_XATTR = "trusted.overlay."
_IS_ROOT = os.geteuid() == 0


def xattrs(path: str | Path) -> dict[str, bytes]:
    """Extended attributes of ``path`` (not following symlinks), overlay's own left out."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM, errno.ENOENT):
            return {}
        raise
    out: dict[str, bytes] = {}
    for name in names:
        if name.startswith(_OVERLAY_XATTR):
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                raise
    return out


def copy_metadata(src: str | Path, dst: str | Path, st: os.stat_result) -> None:
    """Give ``dst`` the owner, mode, xattrs and times of ``src`` (``st`` is its lstat)."""
    is_link = stat.S_ISLNK(st.st_mode)
    try:
        os.lchown(dst, st.st_uid, st.st_gid)
    except PermissionError:
        if _IS_ROOT:
            raise
    for name, value in xattrs(src).items():
        try:
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EACCES):
                raise
    if not is_link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_entry(
    src: str | Path,
    dst: str | Path,
    st: os.stat_result,
    links: dict[tuple[int, int], str] | None = None,
) -> None:
    """Create ``dst`` as a copy of the single entry ``src`` (a directory is created empty).

    Directory metadata is NOT applied here (children change a directory's times): callers
    apply it after the children with :func:`copy_metadata`.
    """
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        os.mkdir(dst, 0o700)
        return
    if links is not None and st.st_nlink > 1 and not stat.S_ISDIR(mode):
        first = links.get((st.st_dev, st.st_ino))
        if first is not None:
            os.link(first, dst)
            return
        links[(st.st_dev, st.st_ino)] = str(dst)
    if stat.S_ISREG(mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        os.mknod(dst, mode, st.st_rdev)
    elif stat.S_ISSOCK(mode):
        return  # sockets are not file system content
    copy_metadata(src, dst, st)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the contents of directory ``src`` into the existing empty directory ``dst``."""
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, str, os.stat_result]] = [(str(src), str(dst), os.lstat(src))]
    stack = [(str(src), str(dst))]
    while stack:
        s_dir, d_dir = stack.pop()
        with os.scandir(s_dir) as it:
            for entry in it:
                s = entry.path
                d = os.path.join(d_dir, entry.name)
                st = entry.stat(follow_symlinks=False)
                copy_entry(s, d, st, links)
                if stat.S_ISDIR(st.st_mode):
                    dirs.append((s, d, st))
                    stack.append((s, d))
    for s, d, st in reversed(dirs):
        copy_metadata(s, d, st)


def remove(path: str | Path) -> None:
    """Remove a file or a whole tree; a missing path is fine; read-only dirs are handled."""

    def fix(func: object, p: str, info: tuple[type[BaseException], BaseException, object]) -> None:
        if isinstance(info[1], FileNotFoundError):
            return
        os.chmod(os.path.dirname(p), 0o700)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o700)
            shutil.rmtree(p, onerror=fix)
        else:
            os.unlink(p)

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, onerror=fix)
    else:
        try:
            os.unlink(path)
        except PermissionError:
            os.chmod(os.path.dirname(path), 0o700)
            os.unlink(path)


def disk_usage(path: Path) -> int:
    """Bytes used on disk by the tree at ``path`` (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(path)]
    try:
        total += os.lstat(path).st_blocks * 512
    except FileNotFoundError:
        return 0
    while stack:
        try:
            it = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return total


def same_entry(a: str, sa: os.stat_result, b: str, sb: os.stat_result) -> bool:
    """True when two entries look identical: type, mode, owner, size, mtime, target, xattrs."""
    if sa.st_mode != sb.st_mode or sa.st_uid != sb.st_uid or sa.st_gid != sb.st_gid:
        return False
    if sa.st_mtime_ns != sb.st_mtime_ns:
        return False
    mode = sa.st_mode
    if not stat.S_ISDIR(mode) and sa.st_size != sb.st_size:
        return False
    if stat.S_ISLNK(mode) and os.readlink(a) != os.readlink(b):
        return False
    if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and sa.st_rdev != sb.st_rdev:
        return False
    return xattrs(a) == xattrs(b)
