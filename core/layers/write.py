"""Snapshot changes to an OCI layer tar, deterministic, with the diff ID hashed while written.

Conventions (see the exporters spec, layer tar section): entries in walk order (depth
first, names sorted bytewise), relative names without ``./`` and without a root entry,
directories with a trailing ``/``, and every parent directory of a changed entry written
with its current metadata. Plain USTAR headers with numeric uid/gid, permission bits plus
setuid/setgid/sticky, mtimes truncated to whole seconds; PAX records only for long names and
the ``security.capability`` attribute (``all_xattrs=True`` writes every attribute). The
first path of a hard-linked inode carries the data, the others link to it. A deletion is an
empty ``.wh.<name>`` file (mode 0, owner 0:0) at the deleted entry's place in walk order.
Sockets are skipped.

Deliberate difference from BuildKit v0.11: a whiteout's mtime is its directory's mtime
(BuildKit writes the export time), so the same diff always gives the same bytes; with
``source_date_epoch`` every mtime later than the epoch becomes the epoch (what
``rewrite-timestamp`` does in later BuildKit), so two builds of the same steps give the same
layer digests.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bkcore.cache import fsutil
from bkcore.cache.changes import Change, tree_changes
from bkcore.errors import ExportError
from bkcore.layers import tarfmt

CHUNK = 1 << 20
_CAPABILITY = "security.capability"
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True, slots=True)
class TarInfo:
    """What writing a layer tar measured: ``sha256:`` of the uncompressed bytes and size."""

    diff_id: str
    size: int


class DigestWriter:
    """Buffers small writes into large ones, hashes everything, forwards to ``sink``."""

    def __init__(self, sink: Writable) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self._buf = bytearray()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        self.size += n
        if n >= CHUNK:
            self._flush_buf()
            self._hash.update(data)
            self._sink.write(bytes(data))
        else:
            self._buf += data
            if len(self._buf) >= CHUNK:
                self._flush_buf()
        return n

    def _flush_buf(self) -> None:
        if self._buf:
            self._hash.update(self._buf)
            self._sink.write(bytes(self._buf))
            self._buf.clear()

    def close(self) -> str:
        """Flush what is buffered; return the ``sha256:`` digest of everything written."""
        self._flush_buf()
        return "sha256:" + self._hash.hexdigest()


def _sort_key(change: Change) -> list[bytes]:
    return os.fsencode(change.path).split(b"/")


def _root_of(changes: list[Change]) -> Path | None:
    """The tree the changes' sources live in (their source minus their relative path)."""
    for change in changes:
        if change.source is None:
            continue
        depth = change.path.count("/") + 1
        root = change.source
        for _ in range(depth):
            root = root.parent
        if root / change.path == change.source:
            return root
    return None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


class _Writer:
    def __init__(self, out: DigestWriter, epoch: int | None, all_xattrs: bool) -> None:
        self.out = out
        self.epoch = epoch
        self.all_xattrs = all_xattrs
        self.links: dict[tuple[int, int], bytes] = {}

    def mtime(self, st: os.stat_result | None) -> int:
        seconds = st.st_mtime_ns // 1_000_000_000 if st is not None else 0
        if self.epoch is not None and (st is None or seconds > self.epoch):
            return self.epoch
        return seconds

    def _xattrs(self, host: Path) -> dict[str, bytes]:
        found = fsutil.xattrs(host)
        if self.all_xattrs:
            return found
        return {k: v for k, v in found.items() if k == _CAPABILITY}

    def directory(self, name: bytes, st: os.stat_result | None, host: Path | None) -> None:
        if st is None or host is None:  # a parent the source tree does not have
            self.out.write(
                tarfmt.header(name + b"/", tarfmt.DIR, mode=0o755, mtime=self.mtime(None))
            )
            return
        self.out.write(
            tarfmt.header(
                name + b"/",
                tarfmt.DIR,
                mode=stat.S_IMODE(st.st_mode),
                uid=st.st_uid,
                gid=st.st_gid,
                mtime=self.mtime(st),
                xattrs=self._xattrs(host),
            )
        )

    def whiteout(self, name: bytes, parent_st: os.stat_result | None) -> None:
        self.out.write(tarfmt.header(name, tarfmt.REG, mtime=self.mtime(parent_st)))

    def entry(self, name: bytes, host: Path) -> bool:
        """Write one entry; False when it has a type layers do not carry (a socket)."""
        st = os.lstat(host)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            self.directory(name, st, host)
            return True
        if stat.S_ISSOCK(mode):
            return False
        mtime = self.mtime(st)

        def head(kind: bytes, **extra: Any) -> bytes:
            return tarfmt.header(
                name,
                kind,
                mode=stat.S_IMODE(mode),
                uid=st.st_uid,
                gid=st.st_gid,
                mtime=mtime,
                **extra,
            )

        if st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                self.out.write(head(tarfmt.LNK, link=first))
                return True
            self.links[(st.st_dev, st.st_ino)] = name
        xattrs = self._xattrs(host)
        if stat.S_ISREG(mode):
            self.out.write(head(tarfmt.REG, size=st.st_size, xattrs=xattrs))
            self._data(host, st.st_size)
        elif stat.S_ISLNK(mode):
            link = os.fsencode(os.readlink(host))
            self.out.write(head(tarfmt.SYM, link=link, xattrs=xattrs))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = tarfmt.CHR if stat.S_ISCHR(mode) else tarfmt.BLK
            dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
            self.out.write(head(kind, device=dev, xattrs=xattrs))
        elif stat.S_ISFIFO(mode):
            self.out.write(head(tarfmt.FIFO, xattrs=xattrs))
        else:
            return False
        return True

    def _data(self, host: Path, size: int) -> None:
        fd = os.open(host, _READ_FLAGS)
        try:
            left = size
            while left:
                block = os.read(fd, min(CHUNK, left))
                if not block:
                    raise ExportError(f"layer: {host} shrank while being archived")
                self.out.write(block)
                left -= len(block)
        finally:
            os.close(fd)
        pad = -size % tarfmt.BLOCK
        if pad:
            self.out.write(bytes(pad))


def write_changes(
    changes: Iterable[Change],
    out: Writable,
    *,
    root: Path | None = None,
    source_date_epoch: int | None = None,
    all_xattrs: bool = False,
) -> TarInfo:
    """Write the layer tar of ``changes`` (what ``SnapshotStore.diff`` yields) to ``out``.

    ``root`` is the tree the changes were taken from (parents' metadata is read there); by
    default it is worked out from the changes' sources. Blocking: run in a thread.
    """
    ordered = sorted(changes, key=_sort_key)
    if root is None:
        root = _root_of(ordered)
    sink = DigestWriter(out)
    w = _Writer(sink, source_date_epoch, all_xattrs)
    written: set[bytes] = set()
    try:
        for change in ordered:
            parts = os.fsencode(change.path).split(b"/")
            for i in range(1, len(parts)):
                parent = b"/".join(parts[:i])
                if parent not in written:
                    written.add(parent)
                    host = root / os.fsdecode(parent) if root is not None else None
                    st = _lstat(host) if host is not None else None
                    w.directory(parent, st if st and stat.S_ISDIR(st.st_mode) else None, host)
            if change.kind == "delete":
                host_parent = (root / change.path).parent if root is not None else None
                w.whiteout(
                    os.fsencode(change.oci_path), _lstat(host_parent) if host_parent else None
                )
                continue
            if change.source is None:
                raise ExportError(f"layer: change {change.path!r} has no source")
            name = b"/".join(parts)
            w.entry(name, change.source)
            written.add(name)
        sink.write(tarfmt.end_of_archive())
    except OSError as exc:
        raise ExportError(f"layer: cannot archive: {exc}") from exc
    return TarInfo(sink.close(), sink.size)


def write_directory(
    root: Path,
    out: Writable,
    *,
    source_date_epoch: int | None = None,
    all_xattrs: bool = False,
) -> TarInfo:
    """Write the whole tree ``root`` as a base layer (every entry added)."""
    return write_changes(
        tree_changes(None, root),
        out,
        root=root,
        source_date_epoch=source_date_epoch,
        all_xattrs=all_xattrs,
    )
