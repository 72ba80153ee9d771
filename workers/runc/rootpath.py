"""Resolve and create paths inside an untrusted root directory without escaping it.

Symlinks are followed the way the kernel would follow them if ``root`` were ``/``: an
absolute link target restarts at ``root`` and ``..`` never climbs above it. These helpers are
not race-free against a concurrent writer of the tree (like securejoin); rootfs snapshots are
not modified by anyone else while a container is being prepared.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque

_MAX_LINKS = 255


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def resolve_in_root(root: str, path: str, *, follow_last: bool = True) -> str:
    """Return the host path that ``path`` names inside ``root`` (symlinks scoped to ``root``).

    Components that do not exist are appended lexically. Raises ``OSError(ELOOP)`` after too
    many symlinks.
    """
    root = os.path.abspath(root)
    pending = deque(_components(path))
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode) and (pending or follow_last):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending.extendleft(reversed(_components(target)))
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


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
