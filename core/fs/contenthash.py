"""BuildKit's content checksum of a path in a snapshot (``cache/contenthash``).

Records per clean in-root path: the digest of a file or symlink (a tar-sum header, then
the bytes of a non-empty regular file), a directory *header* (the dir's own metadata) and a
directory *contents* digest (header plus every child, recursively). The header never holds
mtime or the name; mode has no type bits (symlinks 0777); uid, gid and kept xattrs
(``security.capability`` and any name outside ``security.*``/``system.*``) count.

A :class:`ContentHasher` belongs to one snapshot and caches every record it computes, so
repeated queries (one per selector of a build) cost one dict lookup. Call
:meth:`ContentHasher.invalidate` after changing the snapshot.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import posixpath
import stat
from collections.abc import Sequence

from bkcore.fs.errors import PathNotFoundError
from bkcore.fs.patterns import PathMatcher
from bkcore.fs.securepath import resolve_components
from bkcore.fs.wildcards import resolve_wildcards, split_wildcards

_SMALL = 1 << 20
EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"").hexdigest()

_TYPEFLAGS = {
    stat.S_IFREG: "0",
    stat.S_IFLNK: "2",
    stat.S_IFCHR: "3",
    stat.S_IFBLK: "4",
    stat.S_IFDIR: "5",
    stat.S_IFIFO: "6",
    stat.S_IFSOCK: "0",
}


def kept_xattr(name: str) -> bool:
    """Whether an xattr counts in the checksum (BuildKit keeps security.capability)."""
    return name == "security.capability" or not name.startswith(("security.", "system."))


def tarsum_header(st: os.stat_result, linkname: str, xattrs: dict[str, bytes]) -> bytes:
    """The header bytes hashed before a file's data (keys and values, no separators)."""
    fmt = stat.S_IFMT(st.st_mode)
    mode = 0o777 if fmt == stat.S_IFLNK else stat.S_IMODE(st.st_mode)
    size = st.st_size if fmt == stat.S_IFREG else 0
    dev = fmt in (stat.S_IFCHR, stat.S_IFBLK)
    major = os.major(st.st_rdev) if dev else 0
    minor = os.minor(st.st_rdev) if dev else 0
    text = (
        f"name{''}mode{mode}uid{st.st_uid}gid{st.st_gid}size{size}"
        f"typeflag{_TYPEFLAGS.get(fmt, '0')}linkname"
    )
    parts = [
        text.encode(),
        os.fsencode(linkname),
        f"unamegnamedevmajor{major}devminor{minor}".encode(),
    ]
    for name in sorted(xattrs, key=os.fsencode):
        parts.append(os.fsencode(name))
        parts.append(xattrs[name])
    return b"".join(parts)


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for name in names:
        if kept_xattr(name):
            try:
                out[name] = os.getxattr(path, name, follow_symlinks=False)
            except OSError:
                continue
    return out


def _hash_file(h: hashlib._Hash, host: str, size: int) -> None:
    """Feed a file's bytes to *h*: one read for small files, a mapping for large ones."""
    fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if size <= _SMALL:
            h.update(os.read(fd, _SMALL + 1))
            return
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
            h.update(m)
    finally:
        os.close(fd)


def combine_selectors(digests: Sequence[str]) -> str:
    """The content key of several selector digests (sha256 of them joined by 0 bytes)."""
    return "sha256:" + hashlib.sha256(b"\0".join(d.encode() for d in digests)).hexdigest()


class ContentHasher:
    """Checksums of paths in one snapshot directory, with a record cache."""

    def __init__(self, root: str, *, empty_root_header: bool = False) -> None:
        self.root = os.path.abspath(root)
        self.empty_root_header = empty_root_header
        self._records: dict[str, str] = {}  # file, symlink or dir header digest
        self._contents: dict[str, str] = {}  # dir contents digest
        self._inodes: dict[tuple[int, int], str] = {}  # hard-linked files

    # -- records -------------------------------------------------------------------------
    def _host(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _record(self, path: str, st: os.stat_result) -> str:
        """Digest of the entry itself: file/symlink digest, or a directory's header."""
        cached = self._records.get(path)
        if cached is not None:
            return cached
        fmt = stat.S_IFMT(st.st_mode)
        if path == "/" and self.empty_root_header:
            digest = EMPTY_DIGEST
        elif fmt == stat.S_IFREG and st.st_nlink > 1 and (st.st_dev, st.st_ino) in self._inodes:
            digest = self._inodes[(st.st_dev, st.st_ino)]
        else:
            host = self._host(path)
            link = os.readlink(host) if fmt == stat.S_IFLNK else ""
            h = hashlib.sha256(tarsum_header(st, link, _xattrs(host)))
            if fmt == stat.S_IFREG and st.st_size > 0:
                _hash_file(h, host, st.st_size)
            digest = "sha256:" + h.hexdigest()
            if fmt == stat.S_IFREG and st.st_nlink > 1:
                self._inodes[(st.st_dev, st.st_ino)] = digest
        self._records[path] = digest
        return digest

    def _dir_contents(self, path: str, st: os.stat_result) -> str:
        cached = self._contents.get(path)
        if cached is not None:
            return cached
        h = hashlib.sha256(b"\0" + self._record(path, st).encode())
        host = self._host(path)
        for name in sorted(os.listdir(host), key=os.fsencode):
            child = posixpath.join(path, name)
            h.update(b"\0" + os.fsencode(name) + self._digest(child).encode())
        digest = "sha256:" + h.hexdigest()
        self._contents[path] = digest
        return digest

    def _digest(self, path: str, st: os.stat_result | None = None) -> str:
        """Digest a path contributes: contents for a directory, its record otherwise."""
        if st is None:
            st = os.lstat(self._host(path))
        if stat.S_ISDIR(st.st_mode):
            return self._dir_contents(path, st)
        return self._record(path, st)

    def _lookup(self, path: str, follow: bool) -> tuple[str, os.stat_result]:
        comps = resolve_components(self.root, path, follow_final=follow)
        clean = "/" + "/".join(comps)
        try:
            return clean, os.lstat(self._host(clean))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise PathNotFoundError(f"checksum {path}: not found", clean) from exc

    # -- selections ----------------------------------------------------------------------
    def _walk(self, path: str, st: os.stat_result) -> list[tuple[str, os.stat_result]]:
        """*path* and everything below it, in key order."""
        out = [(path, st)]
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(self._host(path)), key=os.fsencode):
                child = posixpath.join(path, name)
                out.extend(self._walk(child, os.lstat(self._host(child))))
        return out

    def _walk_patterns(
        self, base: str, rel: str, matcher: PathMatcher
    ) -> list[tuple[str, os.stat_result]]:
        out: list[tuple[str, os.stat_result]] = []
        host = self._host(posixpath.join(base, rel))
        for name in sorted(os.listdir(host), key=os.fsencode):
            child_rel = f"{rel}/{name}" if rel else name
            child = posixpath.join(base, child_rel)
            st = os.lstat(self._host(child))
            is_dir = stat.S_ISDIR(st.st_mode)
            if matcher.matches(child_rel):
                out.append((child, st))
                if is_dir:
                    out.extend(self._walk_patterns(base, child_rel, matcher))
            elif is_dir and matcher.may_descend(child_rel):
                below = self._walk_patterns(base, child_rel, matcher)
                if below:
                    out.append((child, st))  # the header of a parent of a match
                    out.extend(below)
        return out

    def _selected(
        self, path: str, follow: bool, wildcard: bool, matcher: PathMatcher
    ) -> list[tuple[str, os.stat_result]]:
        if wildcard and split_wildcards(path)[1]:
            found: list[tuple[str, os.stat_result]] = []
            for match in resolve_wildcards(self.root, path):
                st = os.lstat(self._host(match))
                found.extend(self._walk(match, st) if matcher.selects_all else [(match, st)])
                if not matcher.selects_all and stat.S_ISDIR(st.st_mode):
                    found.extend(self._walk_patterns(match, "", matcher))
            return found
        try:
            base, st = self._lookup(path, follow)
        except PathNotFoundError:
            return []
        if not stat.S_ISDIR(st.st_mode):
            return [(base, st)]
        below = self._walk_patterns(base, "", matcher)
        return [(base, st), *below] if below else []

    # -- public --------------------------------------------------------------------------
    def checksum(
        self,
        path: str,
        *,
        follow_links: bool,
        wildcard: bool = False,
        includes: Sequence[str] = (),
        excludes: Sequence[str] = (),
    ) -> str:
        """The ``sha256:<hex>`` checksum of *path* (one selector) in this snapshot.

        Without wildcard or patterns it is the path's record (directories: their contents
        digest); a missing path raises :class:`PathNotFoundError`. With them the matching
        paths are combined (one same-named match: its digest; none: sha256 of nothing).
        """
        matcher = PathMatcher(includes, excludes)
        has_wild = wildcard and bool(split_wildcards(path)[1])
        if not has_wild and matcher.selects_all:
            clean, st = self._lookup(path, follow_links)
            return self._digest(clean, st)
        selected = self._selected(path, follow_links, wildcard, matcher)
        digests: list[tuple[str, str]] = []
        for sel_path, st in selected:
            if stat.S_ISLNK(st.st_mode) and follow_links:
                try:
                    target, tst = self._lookup(sel_path, True)
                    digest = self._digest(target, tst)
                except PathNotFoundError:
                    digest = self._record(sel_path, st)
            else:
                digest = self._record(sel_path, st)
            digests.append((posixpath.basename(sel_path), digest))
        if not digests:
            return EMPTY_DIGEST
        if len(digests) == 1 and digests[0][0] == posixpath.basename(path.rstrip("/")):
            return digests[0][1]
        h = hashlib.sha256(b"\0".join(os.fsencode(name) + d.encode() for name, d in digests))
        return "sha256:" + h.hexdigest()

    def invalidate(self, path: str = "/") -> None:
        """Forget records of *path*, everything below it and its parents' contents digests."""
        clean = posixpath.normpath("/" + path.lstrip("/"))
        prefix = clean.rstrip("/") + "/"
        for table in (self._records, self._contents):
            for key in [k for k in table if k == clean or k.startswith(prefix)]:
                del table[key]
        parent = clean
        while parent != "/":
            parent = posixpath.dirname(parent)
            self._contents.pop(parent, None)
        self._inodes.clear()


def checksum(
    root: str,
    path: str,
    *,
    follow_links: bool,
    wildcard: bool = False,
    includes: Sequence[str] = (),
    excludes: Sequence[str] = (),
    empty_root_header: bool = False,
    hasher: ContentHasher | None = None,
) -> str:
    """Checksum of *path* in snapshot *root*; pass a *hasher* to reuse its record cache."""
    if hasher is None:
        hasher = ContentHasher(root, empty_root_header=empty_root_header)
    return hasher.checksum(
        path, follow_links=follow_links, wildcard=wildcard, includes=includes, excludes=excludes
    )
