"""The receiving side of diffcopy: update a directory incrementally from a packet stream.

Used by the daemon for ``FileSync.DiffCopy`` (local sources) and by the client for
``FileSend.DiffCopy`` directory exports. The stream is untrusted: paths must be clean and
relative, arrive in walk order with every parent sent earlier as a directory, and hard links
may only point at files listed before them. All writes go through :class:`DestTree`.

Which files are requested (the *differ*):

1. ``none``: every regular file.
2. ``metadata`` (BuildKit's): a file is requested when it is new or its type, permission
   bits, size, mtime (ns), owner (when applied) or link target differ from the destination.
3. On top of 2, when the sender offers change tokens (bkcore senders do when asked with the
   ``bkcore-change-tokens`` header; Go senders never do): a file whose metadata matches is
   skipped only if the content index holds a record for it that is still valid for the
   destination file (same inode and ctime) and whose token equals the sender's. Otherwise the
   receiver sends ``REQ{ID, data="sha256"}`` and the sender answers ``HASH{ID, digest}``; the
   file is requested only when the digest differs. A token is the sender's (device, inode,
   ctime): ctime cannot be set by users, so new content with the same size and a restored
   mtime (``touch -r``), which BuildKit misses, changes it. Tokens of files changed within
   a timestamp tick of the walk are withheld ("racy"), so they are always verified by hash.
   A Go sender answers a hash request by sending the file, so the extension degrades safely.
"""

from __future__ import annotations

import asyncio
import gc
import os
import queue
import stat as st
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bkcore.errors import SessionError
from bkcore.session.filesync.dest import DestTree, Existing, hash_existing, scan
from bkcore.session.filesync.index import Record, load_index, save_index
from bkcore.session.filesync.packets import (
    GO_DEVICE,
    GO_DIR,
    GO_SYMLINK,
    GO_TYPE,
    Packet,
    PacketType,
    Stat,
    posix_mode,
)

__all__ = ["HASH_REQUEST", "HEADER_TOKENS", "PacketStream", "SyncResult", "receive_diffcopy"]

HEADER_TOKENS = "bkcore-change-tokens"
HASH_REQUEST = b"sha256"
_HIGH_WATER = 16 << 20
# plain ints: comparing against these is cheaper than an enum member lookup per packet
_STAT, _REQ, _DATA, _FIN, _ERR, _HASH = (
    int(PacketType.STAT),
    int(PacketType.REQ),
    int(PacketType.DATA),
    int(PacketType.FIN),
    int(PacketType.ERR),
    int(PacketType.HASH),
)


class PacketStream(Protocol):
    async def send(self, message: Any) -> None: ...

    async def recv(self) -> Any | None: ...


@dataclass
class SyncResult:
    """What one sync did.

    ``digests`` maps regular files to their content sha256 (hex). ``changed`` holds every
    path whose entry was created, rewritten, re-linked, deleted or had its metadata
    re-applied (content checksums of other paths, and of directories only touched in
    mtime, are still valid).
    """

    entries: int = 0
    files_received: int = 0
    bytes_received: int = 0
    hash_checks: int = 0
    deleted: int = 0
    digests: dict[str, str] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)


_POSIX_MODES: dict[int, int] = {}  # Go mode -> st_mode; a tree has few distinct values


def _posix_mode(mode: int) -> int:
    out = _POSIX_MODES.get(mode)
    if out is None:
        if len(_POSIX_MODES) > 4096:
            _POSIX_MODES.clear()
        out = _POSIX_MODES[mode] = posix_mode(mode)
    return out


def _same_meta(s: Stat, old: Existing, owner: bool) -> bool:
    o = old.stat
    if s.mod_time != o.st_mtime_ns or _posix_mode(s.mode) != o.st_mode:
        return False
    if owner and (s.uid != o.st_uid or s.gid != o.st_gid):
        return False
    if s.mode & GO_TYPE == 0:  # regular file (or hard link, whose size is 0 on the wire)
        return bool(s.linkname) or s.size == o.st_size
    if s.mode & GO_SYMLINK:
        return s.linkname == old.link
    if s.mode & GO_DEVICE:
        return os.makedev(s.devmajor, s.devminor) == o.st_rdev
    return True


def _check_path(path: str) -> None:
    parts = path.split("/")
    if "" in parts or "." in parts or ".." in parts or "\x00" in path:
        raise SessionError(f"sender sent an invalid path {path!r}")


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


class _GcPause:
    """Hold the cyclic garbage collector off while a listing is compared.

    Comparing a listing allocates several objects per entry and frees them by reference
    counting; none form cycles. With the collector on, those allocations trigger collections
    that traverse every object of the process (a full one each sync in a daemon holding much
    state): ~60 ms of a 10,000-entry re-sync. The pause is process-wide, so it is short by
    construction: it ends when the listing is complete (never spans the file transfer),
    nests across concurrent syncs, and leaves a collector disabled by someone else alone.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = False

    def start(self) -> None:
        global _gc_holders, _gc_was_enabled
        if self._held:
            return
        with _gc_lock:
            if _gc_holders == 0:
                _gc_was_enabled = gc.isenabled()
                gc.disable()
            _gc_holders += 1
            self._held = True

    def stop(self) -> None:
        global _gc_holders
        if not self._held:
            return
        with _gc_lock:
            self._held = False
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


class _Writer:
    """Runs :class:`DestTree` operations in order on one thread; the loop never blocks."""

    def __init__(self, tree: DestTree, loop: asyncio.AbstractEventLoop) -> None:
        self.tree = tree
        self._loop = loop
        # (operation, args, bytes held, run even after a failure)
        self._q: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], int, bool] | None]
        self._q = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._room: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.stopping = False
        self.failed = False

    def submit(self, fn: Callable[..., Any], *args: Any, nbytes: int = 0) -> None:
        if self.error is not None:
            raise SessionError(f"writing the destination failed: {self.error}") from self.error
        if nbytes:
            with self._lock:
                self._pending += nbytes
        self._q.put((fn, args, nbytes, False))

    async def throttle(self) -> None:
        with self._lock:
            if self._pending < _HIGH_WATER:
                return
            room = self._room = asyncio.Event()
        await room.wait()

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._pending -= nbytes
            room = self._room
            if room is not None and (self._pending < _HIGH_WATER // 2 or self.error is not None):
                self._room = None
                self._loop.call_soon_threadsafe(room.set)

    async def drain(self) -> None:
        done = asyncio.Event()
        self._q.put((self._loop.call_soon_threadsafe, (done.set,), 0, True))
        await done.wait()
        if self.error is not None:
            raise SessionError(f"writing the destination failed: {self.error}") from self.error

    def stop(self, *, failed: bool) -> None:
        self.failed = failed
        self.stopping = True
        self._q.put(None)

    def run(self) -> None:
        try:
            while (job := self._q.get()) is not None:
                fn, args, nbytes, always = job
                if always or (self.error is None and not (self.stopping and self.failed)):
                    try:
                        fn(*args)
                    except Exception as exc:
                        self.error = exc
                if nbytes:
                    self._release(nbytes)
                if self.error is not None:
                    # wake a throttled producer so it sees the error
                    self._release(0)
        finally:
            if self.failed or self.error is not None:
                self.tree.abort()
            self.tree.close()


class _Receiver:
    def __init__(
        self,
        stream: PacketStream,
        writer: _Writer,
        existing: dict[str, Existing],
        index: dict[str, Record],
        *,
        delete: bool,
        apply_owner: bool,
        differ: Literal["metadata", "none"],
        dest_dir: str,
    ) -> None:
        self.stream = stream
        self.writer = writer
        self.tree = writer.tree
        self.existing = existing
        self.index = index
        self.delete = delete
        self.owner = apply_owner
        self.differ = differ
        self.dest_dir = dest_dir
        self.result = SyncResult()
        self.incoming: dict[str, Stat] = {}
        self.by_id: list[str] = []
        self.dirs: list[str] = []
        self.dirset: set[str] = set()
        self.dirty: set[str] = set()
        self.hardlinks: list[tuple[str, str]] = []
        self.outstanding: set[int] = set()
        self.begun: set[int] = set()
        self.hash_wait: dict[int, str | None] = {}
        self.records: dict[str, Record] = {}
        self.rewritten: set[str] = set()
        self.prev_key = b""
        self.listing_done = False
        self.fin_sent = False
        self.gc_pause = _GcPause()

    # -- packet handlers -----------------------------------------------------------------

    def _on_stat(self, s: Stat) -> Packet | None:
        """Record one listing entry; returns the request to send for it, if any."""
        rel = s.path
        _check_path(rel)
        # walk order = component-wise bytewise order: "/" must sort below every other byte
        key = rel.encode("utf-8", "surrogateescape").replace(b"/", b"\x00")
        if key <= self.prev_key:
            raise SessionError(f"changes out of order at {rel!r}")
        self.prev_key = key
        parent = rel.rpartition("/")[0]
        if parent and parent not in self.dirset:
            raise SessionError(f"{rel!r} arrived before its parent directory")
        ident = len(self.by_id)
        self.by_id.append(rel)
        self.incoming[rel] = s
        old = self.existing.get(rel)
        kind = s.mode & GO_TYPE
        if kind == 0:
            if not s.linkname:
                return self._decide_file(ident, rel, s, old)
            _check_path(s.linkname)
            target = self.incoming.get(s.linkname)
            if target is None or not target.is_regular() or target.linkname:
                raise SessionError(f"hard link {rel!r} points at an unlisted file")
            self.hardlinks.append((rel, s.linkname))
        elif kind & GO_DIR:
            self.dirs.append(rel)
            self.dirset.add(rel)
            if old is None or not st.S_ISDIR(old.stat.st_mode):
                self.writer.submit(self.tree.mkdir, rel)
                self.dirty.add(parent)
                self.result.changed.add(rel)
        elif kind & GO_SYMLINK:
            if old is None or not _same_meta(s, old, self.owner):
                self.writer.submit(self.tree.symlink, rel, s)
                self.dirty.add(parent)
                self.result.changed.add(rel)
        elif old is None or not _same_meta(s, old, self.owner):
            self.writer.submit(self.tree.special, rel, s)
            self.dirty.add(parent)
            self.result.changed.add(rel)
        return None

    def _decide_file(self, ident: int, rel: str, s: Stat, old: Existing | None) -> Packet | None:
        if old is None or self.differ == "none" or not _same_meta(s, old, self.owner):
            return self._request(ident)
        rec = self.index.get(rel)
        o = old.stat
        valid = rec is not None and rec.ino == o.st_ino and rec.ctime == o.st_ctime_ns
        if not s.change:  # a sender without tokens: BuildKit's metadata differ
            if rec is not None and valid:
                self.records[rel] = rec
            return None
        if rec is not None and valid and not s.change.startswith("!") and rec.token == s.change:
            self.records[rel] = rec
            return None
        self.hash_wait[ident] = rec.sha256 if rec is not None and valid else None
        self.result.hash_checks += 1
        return Packet(_REQ, id=ident, data=HASH_REQUEST)

    def _request(self, ident: int) -> Packet:
        self.outstanding.add(ident)
        self.result.files_received += 1
        return Packet(_REQ, id=ident)

    async def _on_data(self, ident: int, data: bytes) -> None:
        if ident not in self.outstanding:
            raise SessionError(f"sender sent data for unrequested id {ident}")
        rel = self.by_id[ident]
        if ident not in self.begun:
            self.begun.add(ident)
            self.writer.submit(self.tree.begin, ident, rel, self.incoming[rel])
        if data:
            self.result.bytes_received += len(data)
            self.writer.submit(self.tree.write, ident, data, nbytes=len(data))
            await self.writer.throttle()
            return
        self.outstanding.discard(ident)
        self.rewritten.add(rel)
        self.dirty.add(rel.rpartition("/")[0])
        self.writer.submit(self._finish_job, ident, rel)
        self.result.changed.add(rel)
        await self._maybe_fin()

    def _token(self, s: Stat) -> str:
        return "" if s.change.startswith("!") else s.change

    def _finish_job(self, ident: int, rel: str) -> None:  # writer thread
        digest, new = self.tree.finish(ident, rel)
        self.records[rel] = Record(
            self._token(self.incoming[rel]), digest, new.st_ino, new.st_ctime_ns
        )

    def _meta_job(self, rel: str, rec: Record) -> None:  # writer thread
        new = self.tree.set_meta(rel, self.incoming[rel])
        self.records[rel] = Record(rec.token, rec.sha256, new.st_ino, new.st_ctime_ns)

    async def _on_hash(self, ident: int, digest: bytes) -> None:
        if ident not in self.hash_wait:
            raise SessionError(f"sender sent a hash for unasked id {ident}")
        expected = self.hash_wait.pop(ident)
        rel = self.by_id[ident]
        if expected is None:
            try:
                expected = await asyncio.to_thread(hash_existing, self.dest_dir, rel)
            except OSError:
                expected = ""  # unreadable or gone: fetch the file
        if digest.hex() != expected:
            await self.stream.send(self._request(ident))
        else:
            s = self.incoming[rel]
            old = self.existing[rel].stat
            rec = Record(self._token(s), expected, old.st_ino, old.st_ctime_ns)
            self.records[rel] = rec
            # the ctime moved: owner, mode bits or xattrs may have changed; re-apply them
            self.writer.submit(self._meta_job, rel, rec)
            self.result.changed.add(rel)
        await self._maybe_fin()

    async def _maybe_fin(self) -> None:
        if self.listing_done and not self.outstanding and not self.hash_wait and not self.fin_sent:
            self.fin_sent = True
            await self.stream.send(Packet(PacketType.FIN))

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        got_fin = False
        recv = self.stream.recv
        send = self.stream.send
        writer = self.writer
        on_stat = self._on_stat
        while True:
            p = await recv()
            if p is None:
                if got_fin:
                    break
                raise SessionError("sender ended the stream before finishing")
            if writer.error is not None:
                raise SessionError(f"writing the destination failed: {writer.error}") from (
                    writer.error
                )
            kind = p.type
            if kind == _STAT:
                if p.stat is None:
                    self.listing_done = True
                    self.gc_pause.stop()
                    await self._maybe_fin()
                elif self.listing_done:
                    raise SessionError("sender sent an entry after the end of the listing")
                elif (request := on_stat(p.stat)) is not None:
                    await send(request)
            elif kind == _DATA:
                await self._on_data(p.id, p.data)
            elif kind == _HASH:
                await self._on_hash(p.id, p.data)
            elif kind == _FIN:
                if not self.fin_sent:
                    raise SessionError("sender finished before the transfer was complete")
                got_fin = True
            elif kind == _ERR:
                raise _PeerError(f"sender failed: {p.data.decode('utf-8', 'replace')}")
            else:
                raise SessionError(f"unexpected packet type {kind}")
        self._finalize()
        await self.writer.drain()

    def _finalize(self) -> None:
        for rel, target in self.hardlinks:
            old, told = self.existing.get(rel), self.existing.get(target)
            if (
                old is not None
                and told is not None
                and target not in self.rewritten
                and os.path.samestat(old.stat, told.stat)
            ):
                continue
            self.writer.submit(self._link_job, rel, target)
            self.result.changed.add(rel)
            self.dirty.add(rel.rpartition("/")[0])
        if self.delete:
            removed: set[str] = set()
            replaced = {r for r in self.incoming if r not in self.dirset}
            for rel in self.existing:
                if rel in self.incoming:
                    continue
                parts = rel.split("/")
                ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]
                if any(a in removed or a in replaced for a in ancestors):
                    continue
                removed.add(rel)
                self.result.deleted += 1
                self.writer.submit(self.tree.remove, rel)
                self.result.changed.add(rel)
                self.dirty.add(rel.rpartition("/")[0])
        for rel in reversed(self.dirs):
            old = self.existing.get(rel)
            s = self.incoming[rel]
            if old is None or not _same_meta(s, old, self.owner):
                self.writer.submit(self.tree.set_meta, rel, s)
                self.result.changed.add(rel)
            elif rel in self.dirty:  # only its mtime moved when children changed
                self.writer.submit(self.tree.set_meta, rel, s)

    def _link_job(self, rel: str, target: str) -> None:  # writer thread
        self.tree.hardlink(rel, target)
        rec = self.records.get(target)
        if rec is not None:  # a new link changes the target's ctime
            new = self.tree.lstat(target)
            self.records[target] = Record(rec.token, rec.sha256, new.st_ino, new.st_ctime_ns)


class _PeerError(SessionError):
    """The other side reported an error; do not answer with ERR."""


async def receive_diffcopy(
    stream: PacketStream,
    dest_dir: str,
    *,
    delete: bool = True,
    apply_owner: bool = False,
    index_path: str | None = None,
    differ: Literal["metadata", "none"] = "metadata",
) -> SyncResult:
    """Receive a diffcopy listing into ``dest_dir`` (created if missing).

    ``delete`` removes entries the sender did not list (FileSync); FileSend merges instead.
    ``apply_owner`` sets the sender's uid/gid (needs root). ``index_path`` is the content
    index file (see :mod:`.index`); without it change tokens are not used.
    """
    dest_dir = os.path.abspath(dest_dir)
    loop = asyncio.get_running_loop()
    gc_pause = _GcPause()
    gc_pause.start()
    try:
        return await _receive(
            stream, dest_dir, loop, gc_pause, delete, apply_owner, index_path, differ
        )
    finally:
        gc_pause.stop()


async def _receive(
    stream: PacketStream,
    dest_dir: str,
    loop: asyncio.AbstractEventLoop,
    gc_pause: _GcPause,
    delete: bool,
    apply_owner: bool,
    index_path: str | None,
    differ: Literal["metadata", "none"],
) -> SyncResult:
    try:
        existing = await asyncio.to_thread(scan, dest_dir)
        index = await asyncio.to_thread(load_index, index_path) if index_path else {}
        tree = await asyncio.to_thread(DestTree, dest_dir, apply_owner=apply_owner)
    except OSError as exc:
        raise SessionError(f"cannot prepare sync destination {dest_dir}: {exc}") from exc
    writer = _Writer(tree, loop)
    recv = _Receiver(
        stream,
        writer,
        existing,
        index,
        delete=delete,
        apply_owner=apply_owner,
        differ=differ,
        dest_dir=dest_dir,
    )
    recv.gc_pause = gc_pause

    async def main() -> None:
        ok = False
        try:
            await recv.run()
            ok = True
        except SessionError as exc:
            if not isinstance(exc, _PeerError):
                await _send_err(stream, str(exc))
            raise
        finally:
            writer.stop(failed=not ok)

    # The writer thread is started before anything can fail so that it always sees the stop
    # marker; even when cancelled, we do not return while it still touches dest_dir.
    thread = loop.run_in_executor(None, writer.run)
    try:
        await main()
    finally:
        await thread
    result = recv.result
    result.entries = len(recv.by_id)
    records = {k: v for k, v in recv.records.items() if k in recv.incoming}
    if index_path and records != index:
        try:
            await asyncio.to_thread(save_index, index_path, records)
        except OSError as exc:
            raise SessionError(f"cannot write sync index {index_path}: {exc}") from exc
    result.digests = {k: v.sha256 for k, v in records.items()}
    for rel, target in recv.hardlinks:
        if target in result.digests:
            result.digests[rel] = result.digests[target]
    return result


async def _send_err(stream: PacketStream, message: str) -> None:
    try:
        await asyncio.wait_for(stream.send(Packet(PacketType.ERR, data=message.encode())), 1.0)
    except (TimeoutError, SessionError, OSError):
        pass
