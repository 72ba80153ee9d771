"""Read and create paths inside an untrusted rootfs without escaping it.

Resolution is :mod:`bkcore.fs.securepath` (symlinks followed as if ``root`` were ``/``; ``..``
never climbs above it). These helpers are not race-free against a concurrent writer of the
tree (like securejoin); rootfs snapshots are not modified by anyone else while a container is
being prepared.
"""

from __future__ import annotations

import errno
import os
import stat

from bkcore.fs.errors import FileOpError
from bkcore.fs.securepath import resolve


def resolve_in_root(root: str, path: str, *, follow_last: bool = True) -> str:
    """Return the host path that ``path`` names inside ``root`` (symlinks scoped to ``root``).

    :func:`bkcore.fs.securepath.resolve` with the error the runc worker's callers expect:
    components that do not exist are appended lexically, and too many symlinks raise
    ``OSError(ELOOP)`` rather than :class:`~bkcore.fs.errors.FileOpError`.
    """
    try:
        return resolve(root, path, follow_final=follow_last)
    except FileOpError as exc:
        raise OSError(errno.ELOOP, "too many levels of symbolic links", path) from exc


def read_regular_file(root: str, path: str, limit: int = 16 << 20) -> bytes | None:
    """Read a regular file inside ``root``; ``None`` when it is missing or not a regular file.

    Opened non-blocking and checked with ``fstat`` so a FIFO or device planted in an
    untrusted rootfs cannot hang or feed us.
    """
    host = resolve_in_root(root, path)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit)
    finally:
        os.close(fd)


def missing_components(root: str, path: str) -> list[str]:
    """Host paths (outermost first) that ``path`` inside ``root`` needs but do not exist yet."""
    host = resolve_in_root(root, path)
    rel = os.path.relpath(host, os.path.abspath(root))
    if rel == ".":
        return []
    missing: list[str] = []
    current = os.path.abspath(root)
    for part in rel.split(os.sep):
        current = os.path.join(current, part)
        if missing or not os.path.lexists(current):
            missing.append(current)
    return missing


def mkdir_all_in_root(root: str, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> str:
    """Create directory ``path`` inside ``root`` (and missing parents) owned by ``uid:gid``.

    Returns the host path. An existing non-directory in the way raises ``NotADirectoryError``.
    """
    created = missing_components(root, path)
    host = resolve_in_root(root, path)
    for directory in created:
        os.mkdir(directory, mode)
        os.chown(directory, uid, gid, follow_symlinks=False)
        os.chmod(directory, mode, follow_symlinks=False)
    if not os.path.isdir(host) or os.path.islink(host):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
    return host
