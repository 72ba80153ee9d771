"""Solver results over committed snapshots: refcounted references protected by one lease.

:class:`SnapshotResults` is the :class:`bkcore.solver.types.ResultStore` of a
:class:`~bkcore.cache.store.CacheStore`. A :class:`SnapshotResult` is one reference to a
committed snapshot (its ``id`` is the snapshot id). While any reference to a snapshot exists in
this process, the snapshot is a resource of this process's results lease, so no ``prune`` (of
this or another process) removes it; the last ``release`` drops it from the lease.

Lease changes run on one worker thread in submission order, so a release followed by a load of
the same snapshot always ends with the snapshot leased. Use :func:`results_for` to get the one
instance of a store (the solver and every op adapter must share it).

Adapter helpers: :func:`new_result` (a reference to a committed snapshot),
:func:`commit_result` (lease, then commit a mutable snapshot), :func:`prepare` (a mutable
snapshot on top of a result), :func:`view` (a read-only directory of a result),
:func:`uses_empty_root_header` (how content checksums of a snapshot treat its root).
"""

from __future__ import annotations

import asyncio
import secrets
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from bkcore.cache import procs
from bkcore.errors import CacheError
from bkcore.threads import entered_in_thread, shielded_thread

if TYPE_CHECKING:
    from bkcore.cache.mount import Mount
    from bkcore.cache.refs import Lease
    from bkcore.cache.snapshots import MutableSnapshot
    from bkcore.cache.store import CacheStore
    from bkcore.solver.types import Result

__all__ = [
    "LOCAL_SOURCE_DESCRIPTION",
    "SnapshotResult",
    "SnapshotResults",
    "commit_result",
    "mounts",
    "new_result",
    "prepare",
    "results_for",
    "uses_empty_root_header",
    "view",
]

#: Snapshot descriptions starting with this mark a synced local source
#: (``bkcore.sources.local`` describes its snapshots ``local source for NAME``).
LOCAL_SOURCE_DESCRIPTION = "local source"


class SnapshotResult:
    """One reference to a committed snapshot; ``release`` it exactly once."""

    __slots__ = ("_released", "_results", "_sid")

    def __init__(self, results: SnapshotResults, snapshot_id: str) -> None:
        self._results = results
        self._sid = snapshot_id
        self._released = False

    @property
    def id(self) -> str:
        """The snapshot id."""
        return self._sid

    @property
    def results(self) -> SnapshotResults:
        return self._results

    @property
    def store(self) -> CacheStore:
        return self._results.store

    @property
    def released(self) -> bool:
        return self._released

    def clone(self) -> SnapshotResult:
        """A new reference (the lease is already held: this never blocks)."""
        if self._released:
            raise RuntimeError(f"clone of released result {self._sid}")
        self._results._counts[self._sid] += 1
        return SnapshotResult(self._results, self._sid)

    async def release(self) -> None:
        if self._released:
            raise RuntimeError(f"result {self._sid} released twice")
        self._released = True
        await self._results._drop(self._sid, wait=True)

    def __repr__(self) -> str:
        return f"SnapshotResult({self._sid!r})"


class SnapshotResults:
    """Refcounts per snapshot id in this process, backed by one lease in the store."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self._counts: dict[str, int] = {}
        # The pending or finished "add to lease" of each referenced snapshot (True: leased).
        self._ready: dict[str, asyncio.Future[bool]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bk-results")
        self._lease: Lease | None = None
        self._closed = False

    # -- public --------------------------------------------------------------------------

    async def load(self, result_id: str) -> SnapshotResult | None:
        """A new reference to the committed snapshot ``result_id``; None when it is gone."""
        if not await self._acquire(result_id, committed=True):
            return None
        return SnapshotResult(self, result_id)

    async def adopt(self, snapshot_id: str) -> SnapshotResult:
        """A new reference to a committed snapshot; CacheError when it does not exist."""
        if not await self._acquire(snapshot_id, committed=True):
            raise CacheError(f"snapshot {snapshot_id} does not exist or is not committed")
        return SnapshotResult(self, snapshot_id)

    async def commit(self, mutable: MutableSnapshot) -> SnapshotResult:
        """Lease the mutable snapshot, commit it (in a thread) and return a reference.

        Leasing first means no concurrent prune can remove the snapshot between its commit
        and the first reference. On failure (or cancellation) the snapshot is discarded.
        """
        sid = mutable.id
        try:
            if not await self._acquire(sid, committed=False):
                raise CacheError(f"snapshot {sid} vanished before its commit")
        except BaseException:
            await asyncio.to_thread(mutable.discard)
            raise
        result = SnapshotResult(self, sid)
        try:
            await shielded_thread(mutable.commit)
        except BaseException:
            await asyncio.to_thread(mutable.discard)
            await result.release()
            raise
        return result

    def refs(self, snapshot_id: str) -> int:
        """Live references to ``snapshot_id`` in this process."""
        return self._counts.get(snapshot_id, 0)

    def live_refs(self) -> int:
        """Live references over every snapshot (tests use it to find leaks)."""
        return sum(self._counts.values())

    @property
    def lease_id(self) -> str | None:
        """Name of this process's lease once one was taken."""
        return self._lease.id if self._lease else None

    async def close(self) -> None:
        """Drop the lease (every reference is void afterwards) and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await asyncio.shield(loop.run_in_executor(self._executor, self._release_lease))
        self._executor.shutdown(wait=False)
        _INSTANCES.pop(self.store, None)

    # -- internals -----------------------------------------------------------------------

    async def _acquire(self, sid: str, *, committed: bool) -> bool:
        if self._closed:
            raise CacheError("result store is closed")
        count = self._counts.get(sid, 0)
        if count == 0:
            loop = asyncio.get_running_loop()
            self._ready[sid] = loop.run_in_executor(self._executor, self._lease_add, sid, committed)
        self._counts[sid] = count + 1
        ready = self._ready[sid]
        try:
            ok = await asyncio.shield(ready)
        except BaseException:
            await self._drop(sid, wait=False)
            raise
        if not ok:
            await self._drop(sid, wait=False)
        return ok

    async def _drop(self, sid: str, *, wait: bool) -> None:
        count = self._counts[sid] - 1
        if count:
            self._counts[sid] = count
            return
        del self._counts[sid]
        self._ready.pop(sid, None)
        if self._closed:
            return
        # Queued after the add (one worker thread): the lease ends up without the snapshot.
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._lease_remove, sid)
        if wait:
            await asyncio.shield(done)

    def _lease_add(self, sid: str, committed: bool) -> bool:
        if committed:
            rows = self.store.db.query("SELECT state FROM snapshots WHERE id=?", (sid,))
            if not rows or rows[0][0] != "committed":
                return False
        if self._lease is None:
            pid, started = procs.me()
            name = f"results-{pid}-{started}-{secrets.token_hex(4)}"
            self._lease = self.store.leases.create(name)
        try:
            self._lease.add("snapshot", sid)
        except CacheError:
            if self.store.snapshots.exists(sid):
                raise
            return False
        return True

    def _lease_remove(self, sid: str) -> None:
        if self._lease is not None:
            self._lease.remove("snapshot", sid)

    def _release_lease(self) -> None:
        if self._lease is not None:
            self.store.leases.release(self._lease)
            self._lease = None


_INSTANCES: weakref.WeakKeyDictionary[CacheStore, SnapshotResults] = weakref.WeakKeyDictionary()


def results_for(store: CacheStore) -> SnapshotResults:
    """The one :class:`SnapshotResults` of ``store`` in this process (made on first use)."""
    found = _INSTANCES.get(store)
    if found is None:
        found = SnapshotResults(store)
        _INSTANCES[store] = found
    return found


def _snapshot_result(result: Result) -> SnapshotResult:
    if not isinstance(result, SnapshotResult):
        raise CacheError(f"result {result.id} is not a snapshot result")
    if result.released:
        raise RuntimeError(f"result {result.id} was released")
    return result


async def new_result(store: CacheStore, snapshot_id: str) -> SnapshotResult:
    """A new reference to the committed ``snapshot_id`` (CacheError when it is gone)."""
    return await results_for(store).adopt(snapshot_id)


async def commit_result(store: CacheStore, mutable: MutableSnapshot) -> SnapshotResult:
    """Commit ``mutable`` (leased first) and return the first reference to it."""
    return await results_for(store).commit(mutable)


async def prepare(
    store: CacheStore, parent: Result | None, description: str = ""
) -> MutableSnapshot:
    """A writable snapshot on top of ``parent`` (None: empty); the caller commits or discards.

    Pass it to :func:`commit_result`; ``parent`` must stay referenced until then.
    """
    parent_id = _snapshot_result(parent).id if parent is not None else None
    return await _shielded_prepare(store, parent_id, description)


async def _shielded_prepare(
    store: CacheStore, parent_id: str | None, description: str
) -> MutableSnapshot:
    task = asyncio.ensure_future(asyncio.to_thread(store.snapshots.prepare, parent_id, description))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is None:
            await asyncio.to_thread(task.result().discard)
        raise


@asynccontextmanager
async def view(result: Result) -> AsyncIterator[Path]:
    """A read-only directory showing the result while the block runs (mounted in a thread)."""
    res = _snapshot_result(result)
    async with entered_in_thread(res.store.snapshots.view(res.id)) as path:
        yield path


def mounts(result: Result) -> list[Mount]:
    """How a runtime mounts the result read-only (a cheap database read; no mount happens)."""
    res = _snapshot_result(result)
    return res.store.snapshots.mounts(res.id)


def uses_empty_root_header(store: CacheStore, snapshot_id: str) -> bool:
    """Whether content checksums of ``snapshot_id`` use the empty root header.

    True for a synced local source: its root directory's own metadata (mode, owner, mtime of
    the client's directory) never counts, so ``ContentHasher(root, empty_root_header=True)``.
    Every op computing content keys (file ops, exec mounts) asks this one question.
    Blocking (a metadata read); :class:`~bkcore.errors.CacheError` when the snapshot is gone.
    """
    return store.snapshots.get(snapshot_id).description.startswith(LOCAL_SOURCE_DESCRIPTION)
