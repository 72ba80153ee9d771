"""The solver :class:`~bkcore.solver.types.Op`\\ s of LLB ``MergeOp`` and ``DiffOp``.

Cache map (spec/solver.md §2.4): the digest is the Go JSON text of
``{"Type":"buildkit.merge.v0","Merge":…}`` / ``{"Type":"buildkit.diff.v0","Diff":…}`` itself,
not hashed; one plain dependency per input (no selectors, no content keys), so the result is
keyed by its inputs' keys only.

Exec:

* merge: the inputs stacked in ``MergeOp.inputs`` order (later on top, deletions of diff
  inputs replayed); no input gives an empty snapshot and one input is that input itself;
* diff: what changed from ``lower`` to ``upper`` (index ``-1`` = scratch). Scratch to upper is
  upper itself, a snapshot against itself is empty, lower to scratch deletes lower's entries.
  When lower's layers are the bottom of upper's (upper was built on lower), the diff keeps
  upper's layers above lower as they are -- each its own layer, with its own description
  (the image history's ``created_by``) -- as BuildKit v0.11's cache manager does
  (tests/bkdiff: merge-base-and-exec, diff-file-states).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bkcore.cache.results import SnapshotResult, commit_result, prepare, results_for
from bkcore.errors import CacheError, DefinitionError
from bkcore.ops.cachejson import diff_document, merge_document
from bkcore.solver.types import CacheMap, Dep, OpContext, Result

if TYPE_CHECKING:
    from bkcore.cache.snapshots import SnapshotStore
    from bkcore.cache.store import CacheStore
    from bkcore.engine import Engine
    from bkcore.llb import pb
    from bkcore.llb.platforms import Platform

__all__ = ["DiffOpAdapter", "MergeOpAdapter"]

#: Parallelism group: merge and diff are file work in this process, not container runs.
WORKER = "local"
SCRATCH = -1


def _check_index(index: int, n_inputs: int, what: str, digest: str) -> int:
    if not SCRATCH <= index < n_inputs:
        raise DefinitionError(f"{what} input {index} out of range ({n_inputs} inputs)", digest)
    return index


async def _snapshot_in_thread(store: CacheStore, make: Callable[[], str]) -> SnapshotResult:
    """Run ``make`` (which creates a committed snapshot) in a thread and reference its result.

    Cancelled: the thread is waited for and the new snapshot removed again.
    """
    task = asyncio.ensure_future(asyncio.to_thread(make))
    try:
        sid = await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is None:
            await asyncio.to_thread(store.snapshots.delete, task.result())
        raise
    try:
        return await results_for(store).adopt(sid)
    except BaseException:
        if store.snapshots.exists(sid):
            await asyncio.to_thread(store.snapshots.delete, sid)
        raise


def diff_keeping_layers(snaps: SnapshotStore, lower: str, upper: str, description: str) -> str:
    """A committed snapshot of the changes from ``lower`` to ``upper`` (blocking).

    If ``lower``'s layer chain is the start of ``upper``'s, the layers above it stay separate
    layers: one more layer is diffed under that layer's description; several are each taken
    as they are (a layer without parent) or diffed against their own parent, then stacked.
    Otherwise the trees are diffed under ``description``.
    """
    low_chain = snaps.get(lower).chain
    up_chain = snaps.get(upper).chain
    n = len(low_chain)
    if len(up_chain) <= n or tuple(up_chain[:n]) != tuple(low_chain):
        return snaps.diff_snapshot(lower, upper, description)
    extra = [snaps.get(m) for m in up_chain[n:]]
    if len(extra) == 1:
        return snaps.diff_snapshot(lower, upper, extra[0].description or description)
    made: list[str] = []
    try:
        parts = []
        for info in extra:
            if info.parent is None:
                parts.append(info.id)
            else:
                sid = snaps.diff_snapshot(info.parent, info.id, info.description)
                made.append(sid)
                parts.append(sid)
        return snaps.merge(parts, description)
    except BaseException:
        for sid in made:
            if snaps.exists(sid):
                snaps.delete(sid)
        raise


async def _empty(store: CacheStore, description: str) -> SnapshotResult:
    return await commit_result(store, await prepare(store, None, description))


async def _nothing(store: CacheStore, description: str) -> SnapshotResult:
    """BuildKit's nil result (scratch) of a diff of a snapshot against itself or of a merge
    of nothing: an empty tree with no layers (an image of it has none), where an empty
    snapshot would still be one (empty) layer (tests/bkdiff: empty-output)."""
    snaps = store.snapshots
    return await _snapshot_in_thread(store, lambda: snaps.merge([], description))


def _snapshot_ids(inputs: Sequence[Result]) -> list[str]:
    for r in inputs:
        if not isinstance(r, SnapshotResult):
            raise CacheError(f"input {r.id} is not a snapshot result")
    return [r.id for r in inputs]


class _Base:
    def __init__(self, digest: str, engine: Engine, n_inputs: int) -> None:
        self.digest = digest
        self._engine = engine
        self._n_inputs = n_inputs

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def worker(self) -> str:
        return WORKER

    @property
    def store(self) -> CacheStore:
        return self._engine.store

    def _cache_map(self, document: str) -> tuple[CacheMap, bool]:
        return CacheMap(document, tuple(Dep() for _ in range(self._n_inputs))), True


class MergeOpAdapter(_Base):
    """One ``MergeOp``: stack the inputs' snapshots in order."""

    def __init__(self, op: pb.Op, digest: str, engine: Engine, platform: Platform) -> None:
        super().__init__(digest, engine, len(op.inputs))
        self.document = merge_document(op.merge)
        self.order = [
            _check_index(int(m.input), len(op.inputs), "merge", digest) for m in op.merge.inputs
        ]

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        return self._cache_map(self.document)

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        refs = [inputs[i] for i in self.order if i != SCRATCH]
        description = ctx.vertex.name or "merge"
        if not refs:
            return [await _nothing(self.store, description)]
        if len(refs) == 1:
            return [refs[0].clone()]
        ids = _snapshot_ids(refs)
        store = self.store
        return [await _snapshot_in_thread(store, lambda: store.snapshots.merge(ids, description))]


class DiffOpAdapter(_Base):
    """One ``DiffOp``: the changes from ``lower`` to ``upper``."""

    def __init__(self, op: pb.Op, digest: str, engine: Engine, platform: Platform) -> None:
        super().__init__(digest, engine, len(op.inputs))
        self.document = diff_document(op.diff)
        n = len(op.inputs)
        self.lower = _check_index(int(op.diff.lower.input), n, "diff lower", digest)
        self.upper = _check_index(int(op.diff.upper.input), n, "diff upper", digest)

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        return self._cache_map(self.document)

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        lower = inputs[self.lower] if self.lower != SCRATCH else None
        upper = inputs[self.upper] if self.upper != SCRATCH else None
        description = ctx.vertex.name or "diff"
        store = self.store
        if upper is None:
            if lower is None:
                return [await _nothing(store, description)]
            # Lower to scratch: a diff whose deletions remove everything lower holds.
            empty = await _empty(store, f"{description} (scratch upper)")
            try:
                (low_id, up_id) = _snapshot_ids([lower, empty])
                return [
                    await _snapshot_in_thread(
                        store, lambda: store.snapshots.diff_snapshot(low_id, up_id, description)
                    )
                ]
            finally:
                await empty.release()
        if lower is None:
            return [upper.clone()]
        low_id, up_id = _snapshot_ids([lower, upper])
        if low_id == up_id:
            return [await _nothing(store, description)]
        snaps = store.snapshots
        return [
            await _snapshot_in_thread(
                store, lambda: diff_keeping_layers(snaps, low_id, up_id, description)
            )
        ]
