"""The solver: cache lookup, scheduling, deduplication and cancellation (spec/solver.md §3, §6-§8).

Every edge (vertex, output) is completed in the order *initial → cache-fast → cache-slow →
complete*:

1. cache maps of the vertex (sources do their network work here);
2. fast: the definition keys of every input, recursively, with nothing run; a match is loaded
   and the inputs never run;
3. slow: inputs that need a content key (or whose keys are unknown before they complete) are
   completed, preprocessed and hashed; then the query is repeated;
4. complete: every input is completed, the op runs (bounded per worker) and its results are
   saved under all keys.

All jobs share one map of active vertices keyed by digest (``sha256(<digest>-ignorecache)``
for ignore_cache vertices). Each step of a shared vertex is a :class:`Flight`: it runs once for
every job, and it is cancelled only when no job (or dependent vertex) waits for it any more.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, NoReturn

from bkcore.errors import ExecError, SolveError
from bkcore.progress import ProgressStream, SharedProgress, VertexEvent
from bkcore.solver.flight import Flight, gather_all
from bkcore.solver.keys import InputKeys, content_key, match, newest_records, root_key, save_key
from bkcore.solver.keystorage import KeyStorage
from bkcore.solver.types import CacheMap, Dep, JobInfo, OpContext, Result, ResultStore, Vertex

__all__ = ["Job", "Solver", "ignore_cache_key"]

_CANCELED = "context canceled"


def ignore_cache_key(digest: str) -> str:
    """The dedup key of an ignore_cache vertex (spec/solver.md §6)."""
    return "sha256:" + hashlib.sha256(f"{digest}-ignorecache".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Edge:
    """A completed edge: its result and every key it is known under."""

    result: Result
    keys: frozenset[str]


class Job:
    """One client request; holds the shared vertices it loaded until discarded."""

    def __init__(
        self, job_id: str, progress: ProgressStream | None, values: Mapping[str, object]
    ) -> None:
        self.id = job_id
        self.progress = progress
        self.info = JobInfo(job_id, dict(values))
        self._by_key: dict[str, _Shared] = {}
        self._held: set[_Shared] = set()
        self._discarded = False

    @property
    def discarded(self) -> bool:
        return self._discarded


_MAPS = -1
_EXEC = -2


class _Shared:
    """The state of one active vertex, shared by every job that loaded its digest.

    Kept small (the cached path touches thousands of these): flights are made on demand
    in one dict keyed by step: ``_MAPS``, ``_EXEC``, ``4 * output`` (definition keys),
    ``4 * output + 1`` (completion), ``("p", i)`` and ``("c", map, i)`` (input preparation).
    """

    __slots__ = (
        "_ctx",
        "fast_records",
        "flights",
        "inputs",
        "jobs",
        "key",
        "may_gain",
        "owned",
        "progress",
        "reported_cached",
        "vertex",
    )

    def __init__(self, key: str, vertex: Vertex, inputs: tuple[tuple[_Shared, int], ...]) -> None:
        self.key = key
        self.vertex = vertex
        self.inputs = inputs
        self.jobs: dict[Job, None] = {}
        self.progress = SharedProgress(
            VertexEvent(vertex.digest, vertex.name, tuple(v.digest for v, _ in vertex.inputs))
        )
        self._ctx: OpContext | None = None
        self.flights: dict[object, Flight[Any]] = {}
        self.owned: list[Result] = []
        self.fast_records = False
        self.reported_cached = False
        # Whether completing it may give keys its definition did not (set with those keys):
        # it or an input ignores the cache or has a content key, so its edge may be loaded
        # by the slow path or saved under an existing key, whose links lead on to records of
        # its consumers (spec/solver.md §3.1, §3.3). Otherwise an edge without definition
        # keys runs and gets a brand-new key that nothing links from.
        self.may_gain = vertex.ignore_cache

    @property
    def ctx(self) -> OpContext:
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = OpContext(self.vertex, self.progress, self._job_infos)
        return ctx

    def flight(self, key: object) -> Flight[Any]:
        flight = self.flights.get(key)
        if flight is None:
            flight = self.flights[key] = Flight()
        return flight

    def _job_infos(self) -> list[JobInfo]:
        return [job.info for job in self.jobs]


def _wrap(vertex: Vertex, exc: Exception) -> SolveError:
    """The error of a failed vertex: a SolveError naming it (ExecError keeps its fields)."""
    if isinstance(exc, SolveError) and exc.digest:
        return exc
    if isinstance(exc, ExecError):
        return ExecError(exc.argv, exc.exit_code, exc.output_tail, vertex.digest, vertex.name)
    message = exc.message if isinstance(exc, SolveError) else str(exc) or type(exc).__name__
    return SolveError(message, vertex.digest, vertex.name)


def _fail(vertex: Vertex, exc: Exception) -> NoReturn:
    """Raise the error of ``vertex`` failing with ``exc`` (chained when it is a new error)."""
    err = _wrap(vertex, exc)
    if err is exc:
        raise err
    raise err from exc


_UNBOUNDED: nullcontext[None] = nullcontext()


class Solver:
    """Solves vertices for jobs; use as ``async with Solver(keys, results) as solver``.

    ``parallelism`` bounds how many ops run at once on each worker (``Op.worker``); ``None``
    (the default) sets no bound, as BuildKit's workers without ``max-parallelism`` (an op that
    waits for a process or the network must not hold back an independent stage; CPU-heavy work
    is bounded where it runs, e.g. the compression and copy thread pools).
    """

    def __init__(
        self,
        keys: KeyStorage,
        results: ResultStore,
        *,
        parallelism: int | None = None,
    ) -> None:
        self._keys = keys
        self._results = results
        self._parallelism = parallelism
        self._active: dict[str, _Shared] = {}
        self._ignored: dict[str, _Shared] = {}  # active ignore_cache vertices by plain digest
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._jobs: set[Job] = set()
        self._tg: asyncio.TaskGroup | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Solver:
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        tg = self._tg
        try:
            for job in list(self._jobs):
                await self.discard(job)
        finally:
            self._tg = None
            if tg is not None:
                # Only cancellation is handed on: an error of the body is not a task's error.
                cancelled = isinstance(exc_info[1], asyncio.CancelledError)
                await tg.__aexit__(*(exc_info if cancelled else (None, None, None)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        tg = self._tg
        if tg is None:
            coro.close()
            raise RuntimeError("the Solver is not running: use `async with Solver(...)`")
        return tg.create_task(coro)

    @property
    def parallelism(self) -> int | None:
        """The bound on ops running at once per worker (``None``: unbounded)."""
        return self._parallelism

    @property
    def active_digests(self) -> list[str]:
        """Dedup keys of the vertices some job holds (for tests and debugging)."""
        return list(self._active)

    # -- jobs -----------------------------------------------------------------------------

    def new_job(
        self,
        job_id: str | None = None,
        *,
        progress: ProgressStream | None = None,
        values: Mapping[str, object] | None = None,
    ) -> Job:
        job = Job(job_id or uuid.uuid4().hex, progress, values or {})
        self._jobs.add(job)
        return job

    @asynccontextmanager
    async def job(
        self,
        job_id: str | None = None,
        *,
        progress: ProgressStream | None = None,
        values: Mapping[str, object] | None = None,
    ) -> AsyncIterator[Job]:
        """A job that is discarded on exit (also when cancelled)."""
        job = self.new_job(job_id, progress=progress, values=values)
        try:
            yield job
        finally:
            await self.discard(job)

    async def discard(self, job: Job) -> None:
        """Release what ``job`` holds; vertices no other job holds are stopped and freed.

        The release always runs to its end: a cancellation that arrives while it waits for
        stopped ops (a client that vanished cancels a build a second time) is handed on only
        afterwards, so no result stays held forever."""
        if job._discarded:
            return
        job._discarded = True
        cleanup = asyncio.ensure_future(self._discard(job))
        cancelled = False
        while not cleanup.done():
            try:
                await asyncio.shield(cleanup)
            except asyncio.CancelledError:
                if cleanup.cancelled():
                    raise
                cancelled = True
        cleanup.result()
        if cancelled:
            raise asyncio.CancelledError

    async def _discard(self, job: Job) -> None:
        self._jobs.discard(job)
        closing: list[_Shared] = []
        for sv in job._held:
            sv.jobs.pop(job, None)
            if not sv.jobs:
                if self._active.get(sv.key) is sv:
                    del self._active[sv.key]
                if self._ignored.get(sv.vertex.digest) is sv:
                    del self._ignored[sv.vertex.digest]
                closing.append(sv)
        tasks = [t for sv in closing for f in sv.flights.values() for t in f.cancel()]
        if tasks:
            await asyncio.wait(tasks)  # their last events still reach this job's stream
        if job.progress is not None:
            for sv in job._held:
                sv.progress.remove(job.progress)
        job._held.clear()
        job._by_key.clear()
        for sv in closing:
            owned, sv.owned = sv.owned, []
            for result in owned:
                await result.release()

    # -- solving --------------------------------------------------------------------------

    async def solve(self, vertex: Vertex, job: Job, output: int = 0) -> Result:
        """Complete edge (``vertex``, ``output``) for ``job``; return a result the caller owns."""
        if job._discarded:
            raise SolveError("the job was discarded", vertex.digest, vertex.name)
        sv = self._load(vertex, job)
        edge = await self._complete(sv, output)
        return edge.result.clone()

    def _load(self, head: Vertex, job: Job) -> _Shared:
        """Attach every vertex of the graph to ``job`` (inputs first, no recursion)."""
        memo: dict[Vertex, _Shared] = {}
        stack: list[tuple[Vertex, bool]] = [(head, False)]
        while stack:
            vertex, expanded = stack.pop()
            if vertex in memo:
                continue
            if not expanded:
                stack.append((vertex, True))
                stack.extend((v, False) for v, _ in vertex.inputs if v not in memo)
                continue
            inputs = tuple((memo[v], i) for v, i in vertex.inputs)
            memo[vertex] = self._attach(vertex, inputs, job)
        return memo[head]

    def _attach(self, vertex: Vertex, inputs: tuple[tuple[_Shared, int], ...], job: Job) -> _Shared:
        digest = vertex.digest
        key = ignore_cache_key(digest) if vertex.ignore_cache else digest
        sv = job._by_key.get(key)
        if sv is not None:
            return sv
        active = self._active
        # A normal vertex joins an active ignore_cache one of the same digest (§6).
        sv = None if vertex.ignore_cache else self._ignored.get(digest)
        if sv is None:
            sv = active.get(key)
        if sv is None:
            sv = _Shared(key, vertex, inputs)
            active[key] = sv
            if vertex.ignore_cache:
                self._ignored[digest] = sv
            self._hold(job, sv)
            sv.progress.write(sv.progress.state)  # announced once, no timestamps (§7.1)
        else:
            # Joined: hold its whole input chain too (it may differ from ours).
            pending = [sv]
            while pending:
                shared = pending.pop()
                if shared in job._held:
                    continue
                self._hold(job, shared)
                pending.extend(s for s, _ in shared.inputs)
        job._by_key[key] = sv
        return sv

    @staticmethod
    def _hold(job: Job, sv: _Shared) -> None:
        job._held.add(sv)
        sv.jobs[job] = None
        if job.progress is not None:
            sv.progress.add(job.progress)  # replays earlier events to a late joiner

    # -- edge states ------------------------------------------------------------------------

    def _complete(self, sv: _Shared, output: int) -> asyncio.Future[_Edge]:
        flight: Flight[_Edge] = sv.flight(4 * output + 1)
        return flight.join(self._spawn, self._do_complete, sv, output)

    async def _do_complete(self, sv: _Shared, output: int) -> _Edge:
        if not sv.vertex.ignore_cache:
            keys = await self._def_keys(sv, output)
            if keys:
                hit = await self._load_cached(sv, output, keys)
                if hit is not None:
                    self._mark_inputs_cached(sv)
                    return hit
            if sv.inputs:
                hit = await self._slow(sv, output)
                if hit is not None:
                    self._mark_inputs_cached(sv)
                    return hit
        flight: Flight[list[_Edge]] = sv.flight(_EXEC)
        if sv.vertex.op.num_outputs == 1:  # no other edge can be waiting for this run
            edges = await flight.run_inline(self._spawn, self._exec, sv)
        else:
            edges = await flight.join(self._spawn, self._exec, sv)
        return edges[output]

    async def _maps_inline(self, sv: _Shared) -> list[CacheMap]:
        flight: Flight[list[CacheMap]] = sv.flight(_MAPS)
        if sv.vertex.op.num_outputs == 1:
            return await flight.run_inline(self._spawn, self._do_maps, sv)
        return await flight.join(self._spawn, self._do_maps, sv)

    async def _do_maps(self, sv: _Shared) -> list[CacheMap]:
        vertex = sv.vertex
        n_inputs = len(sv.inputs)
        wrapped = n_inputs == 0  # sources show their keying work as a step (§7.2)
        if wrapped:
            sv.progress.vertex(started=time.time(), completed=None, cached=False, error="")
        maps: list[CacheMap] = []
        try:
            while True:
                cache_map, last = await vertex.op.cache_map(sv.ctx, len(maps))
                if len(cache_map.deps) != n_inputs:
                    if cache_map.deps:
                        raise SolveError(
                            f"cache map has {len(cache_map.deps)} deps for {n_inputs} inputs"
                        )
                    cache_map = CacheMap(
                        cache_map.digest, tuple(Dep() for _ in range(n_inputs)), cache_map.opts
                    )
                maps.append(cache_map)
                if last:
                    break
        except asyncio.CancelledError:
            if wrapped:
                sv.progress.vertex(completed=time.time(), error=_CANCELED)
            raise
        except Exception as exc:
            now = time.time()
            message = _wrap(vertex, exc).message
            sv.progress.vertex(
                started=sv.progress.state.started or now, completed=now, error=message
            )
            _fail(vertex, exc)
        if wrapped:
            sv.progress.vertex(completed=time.time())
        return maps

    def _def_keys(self, sv: _Shared, output: int) -> asyncio.Future[frozenset[str]]:
        flight: Flight[frozenset[str]] = sv.flight(4 * output)
        return flight.join(self._spawn, self._do_def_keys, sv, output)

    async def _do_def_keys(self, sv: _Shared, output: int) -> frozenset[str]:
        """Keys of the edge found from definitions alone (nothing runs); empty if unknown."""
        if sv.vertex.ignore_cache:
            return frozenset()
        if not sv.inputs:
            maps = await self._maps_inline(sv)
            return frozenset(root_key(m.digest, output) for m in maps)
        # Key the inputs while this op computes its maps.
        inputs = sv.inputs
        if len(inputs) == 1:  # the common chain: no gathering needed
            one = self._def_keys(*inputs[0])
            try:
                maps = await self._maps_inline(sv)
            except BaseException:
                one.cancel()
                raise
            input_keys = [await one]
        else:
            many = gather_all([self._def_keys(s, o) for s, o in inputs])
            try:
                maps = await self._maps_inline(sv)
            except BaseException:
                many.cancel()
                raise
            input_keys = await many
        if not sv.may_gain:
            sv.may_gain = any(s.may_gain for s, _ in inputs) or any(
                dep.compute_digest is not None for m in maps for dep in m.deps
            )
        if not all(input_keys):
            return frozenset()
        found: set[str] = set()
        for m in maps:
            alternatives = [
                [(k, dep.selector) for k in keys]
                for keys, dep in zip(input_keys, m.deps, strict=True)
            ]
            found.update(match(self._keys, m.digest, output, alternatives))
        if found and not sv.fast_records:
            sv.fast_records = any(self._keys.results(k) for k in found)
        return frozenset(found)

    async def _all_def_keys(self, sv: _Shared) -> list[frozenset[str]]:
        if len(sv.inputs) == 1:
            return [await self._def_keys(*sv.inputs[0])]
        return await gather_all([self._def_keys(s, o) for s, o in sv.inputs])

    async def _load_cached(self, sv: _Shared, output: int, keys: frozenset[str]) -> _Edge | None:
        """Load the newest record saved under ``keys``; None when there is none left."""
        for record in newest_records(self._keys, keys):
            try:
                result = await self._results.load(record.result_id)
            except Exception as exc:
                _fail(sv.vertex, exc)
            if result is None:  # pruned behind our back: forget it and try the next one
                self._keys.release_result(record.result_id)
                continue
            sv.owned.append(result)
            now = time.time()
            sv.progress.vertex(started=now, completed=None, cached=True, error="")
            sv.progress.vertex(completed=time.time())
            sv.reported_cached = True
            return _Edge(result, keys)
        return None

    def _mark_inputs_cached(self, sv: _Shared) -> None:
        """Report inputs whose own keys had records as cached though they were not loaded.

        Ops without inputs (sources) are left alone: they only show their keying work
        (spec/solver.md §3.2: the FROM vertex of a cached RUN never shows "cached").
        """
        pending = [s for s, _ in sv.inputs]
        while pending:
            shared = pending.pop()
            if shared.reported_cached or not shared.inputs or not shared.fast_records:
                continue
            shared.reported_cached = True
            if shared.progress.state.started is None:
                now = time.time()
                shared.progress.vertex(started=now, completed=now, cached=True)
            pending.extend(s for s, _ in shared.inputs)

    async def _slow(self, sv: _Shared, output: int) -> _Edge | None:
        """Complete inputs that need content keys (or have no keys yet), then query again."""
        maps = await self._maps_inline(sv)
        input_keys = await self._all_def_keys(sv)
        needed: list[int] = []
        for i, (shared, _) in enumerate(sv.inputs):
            content = any(m.deps[i].compute_digest is not None for m in maps)
            if not input_keys[i] and not content and not shared.may_gain:
                # It will run and get a brand-new key, so nothing can match: run (§3.2.4).
                return None
            # An input without definition keys that may gain keys (a COPY from a local
            # source, found by its content key) is completed, then matched by the keys its
            # edge carries: the stored keys it was loaded by, or the key it was saved under.
            if content or not input_keys[i]:
                needed.append(i)
        if not needed:
            return None  # the fast query already saw every key there is
        edges = await gather_all([self._complete(*sv.inputs[i]) for i in needed])
        completed = dict(zip(needed, edges, strict=True))
        contents = await self._content_keys(sv, maps, completed)
        found: set[str] = set()
        for index, m in enumerate(maps):
            alternatives = self._alternatives(m, index, input_keys, completed, contents)
            if all(alternatives):
                found.update(match(self._keys, m.digest, output, alternatives))
        if not found:
            return None
        return await self._load_cached(sv, output, frozenset(found))

    @staticmethod
    def _alternatives(
        m: CacheMap,
        map_index: int,
        input_keys: Sequence[frozenset[str]],
        completed: Mapping[int, _Edge],
        contents: Mapping[tuple[int, int], str | None],
    ) -> list[InputKeys]:
        """Per input: its keys with the map's selector, plus its content key with none."""
        result: list[InputKeys] = []
        for i, dep in enumerate(m.deps):
            keys = set(input_keys[i])
            edge = completed.get(i)
            if edge is not None:
                keys.update(edge.keys)
            pairs = [(k, dep.selector) for k in sorted(keys)]
            ck = contents.get((map_index, i))
            if ck is not None:
                pairs.append((ck, ""))
            result.append(pairs)
        return result

    async def _content_keys(
        self, sv: _Shared, maps: Sequence[CacheMap], completed: Mapping[int, _Edge]
    ) -> dict[tuple[int, int], str | None]:
        """Preprocess the completed inputs and compute their content keys (once per vertex)."""
        preps: list[asyncio.Future[None]] = []
        digests: list[asyncio.Future[str | None]] = []
        slots: list[tuple[int, int]] = []
        for i, edge in completed.items():
            if any(m.deps[i].preprocess is not None for m in maps):
                preps.append(self._preprocess(sv, maps, i, edge.result))
            for index, m in enumerate(maps):
                if m.deps[i].compute_digest is not None:
                    slots.append((index, i))
                    digests.append(self._content(sv, maps, index, i, edge.result))
        if not preps and not digests:
            return {}
        await gather_all(preps)
        values = await gather_all(digests)
        return dict(zip(slots, values, strict=True))

    def _preprocess(
        self, sv: _Shared, maps: Sequence[CacheMap], i: int, result: Result
    ) -> asyncio.Future[None]:
        flight: Flight[None] = sv.flight(("p", i))

        async def run() -> None:
            fns: list[Callable[[Result], Awaitable[None]]] = []
            for m in maps:
                fn = m.deps[i].preprocess
                if fn is not None and fn not in fns:
                    fns.append(fn)
            try:
                for fn in fns:
                    await fn(result)
            except Exception as exc:
                _fail(sv.vertex, exc)

        return flight.join(self._spawn, run)

    def _content(
        self, sv: _Shared, maps: Sequence[CacheMap], index: int, i: int, result: Result
    ) -> asyncio.Future[str | None]:
        flight: Flight[str | None] = sv.flight(("c", index, i))

        async def run() -> str | None:
            fn = maps[index].deps[i].compute_digest
            assert fn is not None
            await self._preprocess(sv, maps, i, result)
            try:
                digest = await fn(result)
            except Exception as exc:
                _fail(sv.vertex, exc)
            return content_key(digest) if digest else None

        return flight.join(self._spawn, run)

    def _semaphore(self, worker: str) -> asyncio.Semaphore | nullcontext[None]:
        if self._parallelism is None:
            return _UNBOUNDED
        sem = self._sems.get(worker)
        if sem is None:
            sem = self._sems[worker] = asyncio.Semaphore(self._parallelism)
        return sem

    async def _exec(self, sv: _Shared) -> list[_Edge]:
        """Complete every input, prepare them, run the op and save its results."""
        vertex = sv.vertex
        op = vertex.op
        maps = await self._maps_inline(sv)
        if len(sv.inputs) == 1:
            inputs = [await self._complete(*sv.inputs[0])]
        else:
            inputs = await gather_all([self._complete(s, o) for s, o in sv.inputs])
        contents = await self._content_keys(sv, maps, dict(enumerate(inputs)))
        async with self._semaphore(op.worker):
            sv.progress.vertex(started=time.time(), completed=None, cached=False, error="")
            try:
                outputs = await op.exec(sv.ctx, [edge.result for edge in inputs])
            except asyncio.CancelledError:
                sv.progress.vertex(completed=time.time(), error=_CANCELED)
                raise
            except Exception as exc:
                sv.progress.vertex(completed=time.time(), error=_wrap(vertex, exc).message)
                _fail(vertex, exc)
        sv.owned.extend(outputs)
        if len(outputs) != op.num_outputs:
            err = SolveError(
                f"op returned {len(outputs)} results for {op.num_outputs} outputs",
                vertex.digest,
                vertex.name,
            )
            sv.progress.vertex(completed=time.time(), error=err.message)
            raise err
        now = time.time()
        sv.progress.vertex(completed=now)
        input_keys = [edge.keys for edge in inputs]
        edges: list[_Edge] = []
        for output, result in enumerate(outputs):
            saved: set[str] = set()
            for index, m in enumerate(maps):
                alternatives = self._alternatives(m, index, input_keys, {}, contents)
                saved.add(save_key(self._keys, m.digest, output, alternatives, result.id, now))
            edges.append(_Edge(result, frozenset(saved)))
        return edges
