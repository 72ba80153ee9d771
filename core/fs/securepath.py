"""Resolve untrusted paths inside a root directory as a chroot would.

``..`` never climbs above the root, absolute symlink targets are re-rooted at the root and
relative ones are resolved one component at a time. Every module of :mod:`bkcore.fs` passes
each path that came from untrusted input (LLB, archives, build contexts) through
:func:`resolve` before touching the file system.
"""

from __future__ import annotations

import os
import stat

from bkcore.fs.errors import FileOpError

MAX_SYMLINKS = 255


def _split(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def resolve_components(root: str, path: str, *, follow_final: bool) -> list[str]:
    """Resolve *path* inside *root*; return the resolved components relative to *root*.

    Components that do not exist are kept as written (after ``..`` handling), so the
    result names where a new entry would be created.
    """
    resolved: list[str] = []
    pending = _split(path)
    pending.reverse()  # a stack: the next component is at the end
    links = 0
    while pending:
        comp = pending.pop()
        if comp == "..":
            if resolved:
                resolved.pop()
            continue
        if not pending and not follow_final:
            resolved.append(comp)
            break
        candidate = os.path.join(root, *resolved, comp)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(comp)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(comp)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise FileOpError(f"resolve {path}: too many levels of symbolic links")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        parts = _split(target)
        parts.reverse()
        pending.extend(parts)
    return resolved


def resolve(root: str, path: str, *, follow_final: bool) -> str:
    """Return the host path of *path* (absolute or relative to the root) inside *root*.

    With ``follow_final`` a symlink in the last component is followed too (and re-rooted);
    otherwise the last component names the entry itself. The result always lies inside
    *root* (``resolve(root, "/") == root``). Raises :class:`FileOpError` on a symlink loop.
    """
    root = os.path.abspath(root)
    comps = resolve_components(root, path, follow_final=follow_final)
    return os.path.join(root, *comps)


def relative(root: str, host_path: str) -> str:
    """The absolute in-root path (``/a/b``) of a host path returned by :func:`resolve`."""
    rel = os.path.relpath(host_path, os.path.abspath(root))
    return "/" if rel == "." else "/" + rel
