"""The sender's listing: walk a directory in fsutil order and produce ``Stat`` entries.

Order is Go ``filepath.Walk``: depth first, a directory before its contents, names sorted
bytewise. Include/exclude patterns are applied with :class:`bkcore.fs.patterns.PathMatcher`;
a directory that is not selected itself is still sent when something below it is. Owners
are reset to 0/0 (solver.md §4). Sockets are skipped. Blocking: run it in a thread.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Sequence
from dataclasses import dataclass

from bkcore.fs.patterns import PathMatcher
from bkcore.fs.securepath import resolve_components
from bkcore.session.filesync.packets import Stat, go_mode

__all__ = ["Entry", "follow_targets", "walk"]

# A file whose ctime is this close to the start of the walk may still change within the same
# timestamp tick after we stat it (Linux file times use a coarse clock, <= 10 ms per tick), so
# its change token is withheld and the receiver verifies it by hash ("racy git" rule).
RACY_NS = 50_000_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(slots=True)
class Entry:
    stat: Stat
    abspath: str


def change_token(s: os.stat_result, walk_start_ns: int) -> str:
    """Opaque token that changes whenever the file's content can have changed.

    Tokens starting with ``!`` are never trusted by the receiver (the file is verified).
    """
    if s.st_ctime_ns >= walk_start_ns - RACY_NS:
        return "!racy"
    return f"{s.st_dev}:{s.st_ino}:{s.st_ctime_ns}"


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for name in names:
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def follow_targets(root: str, follow_paths: Sequence[str]) -> list[str]:
    """The follow paths plus every symlink met along them and the final targets."""
    out: list[str] = []
    for raw in follow_paths:
        path = raw.strip("/")
        if not path:
            continue
        out.append(path)
        # each symlink prefix is included, and the path it resolves to
        parts = [p for p in path.split("/") if p and p != "."]
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if os.path.islink(os.path.join(root, prefix)):
                out.append(prefix)
        resolved = "/".join(resolve_components(root, path, follow_final=True))
        if resolved and resolved not in out:
            out.append(resolved)
    return out


def _name(e: os.DirEntry[str]) -> str:
    return e.name


def _fsname(e: os.DirEntry[str]) -> bytes:
    return os.fsencode(e.name)


def walk(
    root: str,
    includes: Sequence[str] = (),
    excludes: Sequence[str] = (),
    follow_paths: Sequence[str] = (),
    *,
    tokens: bool = False,
    walk_start_ns: int = 0,
    keep_owner: bool = False,
    xattrs: bool = True,
) -> list[Entry]:
    """List ``root`` as diffcopy STAT entries; the n-th entry has packet ID n."""
    if follow_paths:
        includes = [*includes, *follow_targets(root, follow_paths)]
    matcher = PathMatcher(includes, excludes)
    select_all = matcher.selects_all
    entries: list[Entry] = []
    inodes: dict[tuple[int, int], str] = {}
    pending: list[Entry] = []  # ancestors not sent yet (sent once something below is)

    def emit(entry: Entry) -> None:
        if pending:
            entries.extend(pending)
            pending.clear()
        entries.append(entry)

    racy_from = walk_start_ns - RACY_NS
    modes: dict[int, int] = {}  # st_mode -> Go mode (few distinct values per tree)

    def make(rel: str, abspath: str, s: os.stat_result) -> Entry | None:
        mode = s.st_mode
        gmode = modes.get(mode)
        if gmode is None:
            if st.S_ISSOCK(mode):
                return None
            gmode = modes[mode] = go_mode(mode)
        stat = Stat(rel, gmode, 0, 0, 0, s.st_mtime_ns)
        if keep_owner:
            stat.uid, stat.gid = s.st_uid, s.st_gid
        if st.S_ISREG(mode):
            if s.st_nlink > 1:
                first = inodes.setdefault((s.st_dev, s.st_ino), rel)
                if first != rel:
                    stat.linkname = first
            if not stat.linkname:
                stat.size = s.st_size
                if tokens:
                    # inline change_token(): this runs for every file of the context
                    ctime = s.st_ctime_ns
                    stat.change = (
                        "!racy" if ctime >= racy_from else f"{s.st_dev}:{s.st_ino}:{ctime}"
                    )
        elif st.S_ISLNK(mode):
            stat.linkname = os.readlink(abspath)
            stat.size = len(os.fsencode(stat.linkname))
        elif st.S_ISCHR(mode) or st.S_ISBLK(mode):
            stat.devmajor, stat.devminor = os.major(s.st_rdev), os.minor(s.st_rdev)
        if xattrs:
            stat.xattrs = _xattrs(abspath)
        return Entry(stat, abspath)

    def visit(rel_dir: str, abs_dir: str) -> None:
        # entries of a descriptor scan are stat'ed relative to it (no full path lookup)
        dfd = os.open(abs_dir, _DIR_FLAGS)
        try:
            with os.scandir(dfd) as it:
                items = list(it)
            visit_items(rel_dir, abs_dir, items)
        finally:
            os.close(dfd)

    def visit_items(rel_dir: str, abs_dir: str, items: list[os.DirEntry[str]]) -> None:
        # str order is bytewise UTF-8 order unless a name holds undecodable bytes
        if "".join([e.name for e in items]).isascii():
            items.sort(key=_name)
        else:
            items.sort(key=_fsname)
        prefix = f"{rel_dir}/" if rel_dir else ""
        abs_prefix = abs_dir.rstrip("/") + "/"
        for item in items:
            name = item.name
            rel = prefix + name
            path = abs_prefix + name
            s = item.stat(follow_symlinks=False)
            is_dir = st.S_ISDIR(s.st_mode)
            if select_all or matcher.matches(rel):
                entry = make(rel, path, s)
                if entry is None:
                    continue
                if pending:
                    emit(entry)
                else:
                    entries.append(entry)
                if is_dir:
                    visit(rel, path)
            elif is_dir and matcher.may_descend(rel):
                entry = make(rel, path, s)
                assert entry is not None
                depth = len(pending)
                pending.append(entry)
                visit(rel, path)
                del pending[depth:]

    visit("", root)
    return entries
