"""Change lists between file trees, as an OCI layer sees them.

Two producers give the same list for the same edit: :func:`tree_changes` compares a lower and
an upper tree entry by entry (the copying driver), :func:`overlay_changes` reads an overlayfs
upper directory and looks only at what it holds (cheap: untouched files are never visited).
Overlay whiteouts (a 0/0 character device) become ``delete`` changes; an opaque directory
(``trusted.overlay.opaque=y``) becomes a delete of every lower entry it hides, which is the
same result a ``.wh..wh..opq`` marker gives. :func:`apply_changes` replays a list on a tree.
"""

from __future__ import annotations

import errno
import filecmp
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bkcore.cache import fsutil

Kind = Literal["add", "modify", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path. ``path`` is relative, ``/``-separated; ``source`` is where the new
    entry can be read (None for a delete), valid while the snapshot or view is held."""

    kind: Kind
    path: str
    source: Path | None = None

    @property
    def oci_path(self) -> str:
        """The path this change takes in an OCI layer tar (``dir/.wh.name`` for a delete)."""
        if self.kind != "delete":
            return self.path
        head, _, name = self.path.rpartition("/")
        return f"{head}/.wh.{name}" if head else f".wh.{name}"


def _sort_key(change: Change) -> list[str]:
    return change.path.split("/")


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _names(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _differs(a: str, sa: os.stat_result, b: str, sb: os.stat_result) -> bool:
    return not fsutil.same_entry(a, sa, b, sb)


def tree_changes(lower: Path | None, upper: Path) -> list[Change]:
    """Changes that turn the tree ``lower`` (None: empty) into the tree ``upper``."""
    out: list[Change] = []
    low_root = str(lower) if lower is not None else None
    stack: list[tuple[str, bool]] = [("", low_root is not None)]
    while stack:
        rel, has_lower = stack.pop()
        up_dir = os.path.join(upper, rel) if rel else str(upper)
        low_dir = (os.path.join(low_root, rel) if rel else low_root) if low_root else None
        up_names = _names(up_dir)
        low_names = _names(low_dir) if has_lower and low_dir else set()
        for name in sorted(up_names | low_names):
            child = f"{rel}/{name}" if rel else name
            up_path = os.path.join(up_dir, name)
            if name not in up_names:
                out.append(Change("delete", child))
                continue
            su = os.lstat(up_path)
            if name not in low_names:
                out.append(Change("add", child, Path(up_path)))
                if stat.S_ISDIR(su.st_mode):
                    stack.append((child, False))
                continue
            assert low_dir is not None
            low_path = os.path.join(low_dir, name)
            sl = os.lstat(low_path)
            if _differs(low_path, sl, up_path, su):
                out.append(Change("modify", child, Path(up_path)))
            if stat.S_ISDIR(su.st_mode):
                stack.append((child, stat.S_ISDIR(sl.st_mode)))
    out.sort(key=_sort_key)
    return out


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
            return False
        raise


def overlay_changes(upper: Path, lower: Path | None) -> list[Change]:
    """Changes recorded in the overlay upper dir ``upper`` over the merged lower view ``lower``."""
    out: list[Change] = []
    low_root = str(lower) if lower is not None else None
    # (relative dir, whether the lower tree has a real directory there). A lower symlink or
    # file replaced by an upper directory has no lower children: listing or stat'ing through
    # it would follow the link (to the host's /etc for an absolute one) and invent whiteouts.
    stack: list[tuple[str, bool]] = [("", low_root is not None)]
    while stack:
        rel, low_is_dir = stack.pop()
        up_dir = os.path.join(upper, rel) if rel else str(upper)
        low_dir = None
        if low_is_dir and low_root is not None:
            low_dir = os.path.join(low_root, rel) if rel else low_root
        up_names = _names(up_dir)
        if low_dir is not None and rel and _is_opaque(up_dir):
            for name in _names(low_dir) - up_names:
                out.append(Change("delete", f"{rel}/{name}"))
        for name in up_names:
            child = f"{rel}/{name}" if rel else name
            up_path = os.path.join(up_dir, name)
            su = os.lstat(up_path)
            low_path = os.path.join(low_dir, name) if low_dir is not None else None
            sl = _lstat(low_path) if low_path is not None else None
            if is_whiteout(su):
                if sl is not None:
                    out.append(Change("delete", child))
                continue
            if sl is None:
                out.append(Change("add", child, Path(up_path)))
            elif stat.S_ISDIR(su.st_mode) and stat.S_ISDIR(sl.st_mode):
                assert low_path is not None
                if _differs(low_path, sl, up_path, su):
                    out.append(Change("modify", child, Path(up_path)))
            else:
                assert low_path is not None
                if _differs(low_path, sl, up_path, su) or (
                    stat.S_ISREG(su.st_mode) and not filecmp.cmp(low_path, up_path, shallow=False)
                ):
                    out.append(Change("modify", child, Path(up_path)))
            if stat.S_ISDIR(su.st_mode):
                stack.append((child, sl is not None and stat.S_ISDIR(sl.st_mode)))
    out.sort(key=_sort_key)
    return out


def apply_changes(changes: Iterable[Change], target: Path, *, whiteouts: bool = False) -> None:
    """Replay ``changes`` (sorted, parents first) on the tree ``target``.

    With ``whiteouts`` a delete writes an overlay whiteout (0/0 character device) instead of
    removing, so ``target`` becomes an overlay layer that hides the path when stacked.
    """
    dirs: list[tuple[Path, str, os.stat_result]] = []
    links: dict[tuple[int, int], str] = {}
    # Replacing an entry touches its directory; a directory that is not itself changed
    # gets its times back at the end (as it had them in the tree the changes came from).
    parents: dict[Path, tuple[int, int]] = {}
    for change in changes:
        dst = target / change.path
        if dst.parent not in parents:
            pst = _lstat(str(dst.parent))
            if pst is not None:
                parents[dst.parent] = (pst.st_atime_ns, pst.st_mtime_ns)
        if change.kind == "delete":
            fsutil.remove(dst)
            if whiteouts:
                _ensure_parent(dst, target, None)
                os.mknod(dst, stat.S_IFCHR | 0o000, 0)
            continue
        assert change.source is not None
        src = str(change.source)
        st = os.lstat(src)
        existing = _lstat(str(dst))
        if existing is not None and not (
            stat.S_ISDIR(existing.st_mode) and stat.S_ISDIR(st.st_mode)
        ):
            fsutil.remove(dst)
            existing = None
        for made, made_src in _ensure_parent(dst, target, change.source):
            dirs.append((made, str(made_src), os.lstat(made_src)))
        if existing is None:
            fsutil.copy_entry(src, dst, st, links)
        if stat.S_ISDIR(st.st_mode):
            dirs.append((dst, src, st))
    changed_dirs = {d for d, _, _ in dirs}
    for parent, times in parents.items():
        if parent not in changed_dirs and parent.is_dir():
            os.utime(parent, ns=times, follow_symlinks=False)
    for dst, src, st in reversed(dirs):
        fsutil.copy_metadata(src, dst, st)


def _ensure_parent(dst: Path, target: Path, source: Path | None) -> list[tuple[Path, Path]]:
    """Create missing parents of ``dst``; returns (made dir, matching source dir) pairs."""
    missing: list[tuple[Path, Path | None]] = []
    parent, src_parent = dst.parent, source.parent if source is not None else None
    while parent != target and not parent.is_dir():
        missing.append((parent, src_parent))
        parent = parent.parent
        src_parent = src_parent.parent if src_parent is not None else None
    made: list[tuple[Path, Path]] = []
    for path, src in reversed(missing):
        path.mkdir(mode=0o755)
        if src is not None and src.is_dir():
            made.append((path, src))
    return made
