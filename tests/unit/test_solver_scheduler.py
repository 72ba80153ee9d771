"""The solver with fake in-memory ops: cache hits, fast/slow paths, concurrency, dedup,
cancellation, errors, ignore_cache and progress (spec/solver.md §3, §6-§8)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field

import pytest

from bkcore.errors import ExecError, SolveError
from bkcore.progress import Event, LogEvent, ProgressStream, VertexEvent
from bkcore.solver.memkeys import MemoryKeyStorage
from bkcore.solver.memresults import MemoryResult, MemoryResultStore
from bkcore.solver.scheduler import Solver
from bkcore.solver.types import CacheMap, Dep, OpContext, Result, Vertex

_ids = itertools.count()


def run_async(fn: Callable[[], Coroutine[object, object, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop."""

    @functools.wraps(fn)
    def wrapper() -> None:
        asyncio.run(fn())

    return wrapper


@dataclass
class World:
    """Storage that outlives solvers (like the cache dir of a daemon)."""

    keys: MemoryKeyStorage = field(default_factory=MemoryKeyStorage)
    store: MemoryResultStore = field(default_factory=MemoryResultStore)
    execs: list[str] = field(default_factory=list)
    cache_maps: list[str] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    cancelled: list[str] = field(default_factory=list)


class FakeOp:
    """An op whose exec records the call, may sleep or fail, and produces a dict payload."""

    def __init__(
        self,
        world: World,
        name: str,
        *,
        key: str | None = None,
        files: dict[str, str] | None = None,
        selectors: Sequence[str | None] = (),
        sleep: float = 0.0,
        fail: Exception | None = None,
        outputs: int = 1,
        worker: str = "w",
        logs: Sequence[bytes] = (),
        started: asyncio.Event | None = None,
    ) -> None:
        self.world = world
        self.name = name
        self.key = key or f"op:{name}"
        self.files = files
        self.selectors = list(selectors)
        self.sleep = sleep
        self.fail = fail
        self.outputs = outputs
        self._worker = worker
        self.logs = list(logs)
        self.started = started

    @property
    def num_outputs(self) -> int:
        return self.outputs

    @property
    def worker(self) -> str:
        return self._worker

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        self.world.cache_maps.append(self.name)
        deps = tuple(_dep(sel) for sel in self.selectors)
        return CacheMap(self.key, deps), True

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        world = self.world
        world.execs.append(self.name)
        world.running += 1
        world.max_running = max(world.max_running, world.running)
        try:
            if self.started is not None:
                self.started.set()
            for chunk in self.logs:
                ctx.progress.log(1, chunk)
            if self.sleep:
                await asyncio.sleep(self.sleep)
            if self.fail is not None:
                raise self.fail
        except asyncio.CancelledError:
            world.cancelled.append(self.name)
            raise
        finally:
            world.running -= 1
        merged: dict[str, str] = {}
        for result in inputs:
            assert isinstance(result, MemoryResult)
            payload = result.payload
            assert isinstance(payload, dict)
            merged.update(payload)
        if self.files is not None:
            merged.update(self.files)
        merged[f"/{self.name}"] = self.name
        return [
            world.store.add(f"{self.name}-{next(_ids)}", dict(merged)) for _ in range(self.outputs)
        ]


def _dep(selector: str | None) -> Dep:
    """A dep; with a selector path it has a content key over that path only."""
    if selector is None:
        return Dep()

    async def compute(result: Result) -> str:
        assert isinstance(result, MemoryResult)
        payload = result.payload
        assert isinstance(payload, dict)
        data = payload.get(selector, "")
        return "sha256:" + hashlib.sha256(f"{selector}={data}".encode()).hexdigest()

    return Dep(selector=selector, compute_digest=compute)


def vtx(op: FakeOp, *inputs: Vertex | tuple[Vertex, int], ignore_cache: bool = False) -> Vertex:
    """A vertex whose digest depends on its op key and its inputs (like an LLB digest)."""
    edges = tuple(i if isinstance(i, tuple) else (i, 0) for i in inputs)
    text = op.key + "|" + ",".join(f"{v.digest}@{i}" for v, i in edges)
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return Vertex(digest=digest, op=op, inputs=edges, name=op.name, ignore_cache=ignore_cache)


def chain(world: World, **kw: object) -> dict[str, Vertex]:
    """src -> a -> b, plus c(src, a) fanning in, and top(b, c)."""
    src = vtx(FakeOp(world, "src", files={"/etc": "x"}))
    a = vtx(FakeOp(world, "a", selectors=[None]), src)
    b = vtx(FakeOp(world, "b", selectors=[None]), a)
    c = vtx(FakeOp(world, "c", selectors=[None, None]), src, a)
    top = vtx(FakeOp(world, "top", selectors=[None, None]), b, c)
    return {"src": src, "a": a, "b": b, "c": c, "top": top}


async def solve_once(
    world: World, vertex: Vertex, progress: ProgressStream | None = None, **kw: int
) -> dict[str, str]:
    async with Solver(world.keys, world.store, **kw) as solver:
        async with solver.job(progress=progress) as job:
            result = await solver.solve(vertex, job)
    assert isinstance(result, MemoryResult)
    payload = result.payload
    await result.release()
    assert isinstance(payload, dict)
    return payload


async def solve_id(world: World, vertex: Vertex) -> str:
    async with Solver(world.keys, world.store) as solver:
        async with solver.job() as job:
            result = await solver.solve(vertex, job)
    await result.release()
    return result.id


def vertex_events(events: Sequence[Event], digest: str) -> list[VertexEvent]:
    return [e for e in events if isinstance(e, VertexEvent) and e.digest == digest]


def final_state(events: Sequence[Event]) -> dict[str, VertexEvent]:
    state: dict[str, VertexEvent] = {}
    for event in events:
        if isinstance(event, VertexEvent):
            state[event.digest] = event
    return state


# -- cache ---------------------------------------------------------------------------------


@run_async
async def test_second_solve_runs_nothing_and_reports_cached() -> None:
    world = World()
    graph = chain(world)
    first = await solve_once(world, graph["top"])
    assert sorted(world.execs) == ["a", "b", "c", "src", "top"]
    assert first["/top"] == "top" and first["/etc"] == "x"

    world.execs.clear()
    world.cache_maps.clear()
    stream = ProgressStream()
    reader = stream.subscribe()
    second = await solve_once(world, chain(world)["top"], stream)  # new solver, same storage
    stream.close()
    events = [e async for e in reader]

    assert world.execs == []
    assert second == first
    state = final_state(events)
    for name in ("a", "b", "c", "top"):
        assert state[graph[name].digest].cached, name
        assert state[graph[name].digest].completed is not None
    # The source only shows its keying work, never "cached" (spec §3.2).
    src_state = state[graph["src"].digest]
    assert not src_state.cached and src_state.completed is not None
    assert world.store.live_refs() == 0


@run_async
async def test_fast_path_never_runs_or_loads_inputs() -> None:
    world = World()
    graph = chain(world)
    await solve_once(world, graph["top"])
    world.execs.clear()
    world.cache_maps.clear()
    world.store.loads.clear()
    await solve_once(world, chain(world)["top"])
    assert world.execs == []
    assert sorted(world.cache_maps) == ["a", "b", "c", "src", "top"]
    assert len(world.store.loads) == 1  # only the head is loaded


@run_async
async def test_cached_child_does_not_run_its_changed_sibling_branch() -> None:
    world = World()
    src = vtx(FakeOp(world, "src"))
    child = vtx(FakeOp(world, "child", selectors=[None]), src)
    await solve_once(world, child)
    # Same child op on a different source: child must run again (different input key).
    world.execs.clear()
    src2 = vtx(FakeOp(world, "src", key="op:src-v2"))
    await solve_once(world, vtx(FakeOp(world, "child", selectors=[None]), src2))
    assert world.execs == ["src", "child"]


@run_async
async def test_content_keys_follow_the_selected_path_only() -> None:
    world = World()

    def graph(version: str, files: dict[str, str]) -> Vertex:
        src = vtx(FakeOp(world, "src", key=f"op:src-{version}", files=files))
        return vtx(FakeOp(world, "copy", selectors=["/a"]), src)

    await solve_once(world, graph("v1", {"/a": "1", "/b": "1"}))
    assert world.execs == ["src", "copy"]

    world.execs.clear()
    payload = await solve_once(world, graph("v2", {"/a": "1", "/b": "2"}))
    assert world.execs == ["src"]  # the source runs (new key); the copy is cached by content
    assert payload["/b"] == "1"  # the old result is reused, as BuildKit does

    world.execs.clear()
    payload = await solve_once(world, graph("v3", {"/a": "2", "/b": "2"}))
    assert world.execs == ["src", "copy"]
    assert payload["/a"] == "2"


@run_async
async def test_newest_record_wins_and_pruned_records_are_skipped() -> None:
    world = World()
    src = vtx(FakeOp(world, "src"))
    top = vtx(FakeOp(world, "top", selectors=[None]), src)
    older = await solve_id(world, top)
    top_ic = vtx(FakeOp(world, "top", selectors=[None]), src, ignore_cache=True)
    newer = await solve_id(world, top_ic)
    assert newer != older
    world.execs.clear()
    again = await solve_id(world, vtx(FakeOp(world, "top", selectors=[None]), src))
    assert world.execs == []
    assert again == newer
    # Prune every result of "top": the next solve runs it again.
    for rid in list(world.store._payloads):
        if rid.startswith("top-"):
            world.store.prune(rid)
    world.execs.clear()
    await solve_once(world, vtx(FakeOp(world, "top", selectors=[None]), src))
    assert world.execs == ["top"]


@run_async
async def test_ignore_cache_runs_and_still_saves() -> None:
    world = World()
    graph = chain(world)
    await solve_once(world, graph["top"])
    world.execs.clear()
    src = vtx(FakeOp(world, "src", files={"/etc": "x"}), ignore_cache=True)
    a = vtx(FakeOp(world, "a", selectors=[None]), src, ignore_cache=True)
    await solve_once(world, a)
    assert world.execs == ["src", "a"]
    # A normal build afterwards is fully cached.
    world.execs.clear()
    await solve_once(world, chain(world)["top"])
    assert world.execs == []


@run_async
async def test_child_of_an_ignore_cache_vertex_is_found_after_it_runs() -> None:
    world = World()
    graph = chain(world)
    await solve_once(world, graph["b"])
    world.execs.clear()
    src = vtx(FakeOp(world, "src", files={"/etc": "x"}))
    a = vtx(FakeOp(world, "a", selectors=[None]), src, ignore_cache=True)
    b = vtx(FakeOp(world, "b", selectors=[None]), a)
    await solve_once(world, b)
    assert world.execs == ["a"]


# -- concurrency ----------------------------------------------------------------------------


@run_async
async def test_independent_vertices_run_concurrently() -> None:
    world = World()
    x = vtx(FakeOp(world, "x", sleep=0.5))
    y = vtx(FakeOp(world, "y", sleep=0.5))
    top = vtx(FakeOp(world, "top", selectors=[None, None]), x, y)
    await solve_once(world, top, parallelism=4)
    # Both sleeps were in flight at once (no timed assertion: bench/ measures speed).
    assert world.max_running == 2


@run_async
async def test_parallelism_is_bounded_per_worker() -> None:
    world = World()
    leaves = [vtx(FakeOp(world, f"l{i}", sleep=0.05)) for i in range(6)]
    top = vtx(FakeOp(world, "top", selectors=[None] * 6), *leaves)
    await solve_once(world, top, parallelism=2)
    assert world.max_running == 2
    assert len(world.execs) == 7

    # Two workers: each has its own limit.
    world2 = World()
    leaves = [vtx(FakeOp(world2, f"l{i}", sleep=0.05, worker=f"w{i % 2}")) for i in range(6)]
    top = vtx(FakeOp(world2, "top", selectors=[None] * 6), *leaves)
    await solve_once(world2, top, parallelism=1)
    assert world2.max_running == 2


@run_async
async def test_shared_vertex_runs_once_for_two_concurrent_jobs() -> None:
    world = World()

    def graph(tag: str) -> Vertex:
        src = vtx(FakeOp(world, "src"))
        shared = vtx(FakeOp(world, "shared", selectors=[None], sleep=0.2, logs=[b"hello\n"]), src)
        return vtx(FakeOp(world, f"top-{tag}", selectors=[None]), shared)

    streams = [ProgressStream(), ProgressStream()]
    readers = [s.subscribe() for s in streams]
    async with Solver(world.keys, world.store) as solver:

        async def run(i: int) -> dict[str, str]:
            async with solver.job(progress=streams[i]) as job:
                result = await solver.solve(graph(str(i)), job)
            assert isinstance(result, MemoryResult)
            payload = result.payload
            await result.release()
            assert isinstance(payload, dict)
            return payload

        async with asyncio.TaskGroup() as tg:
            t1 = tg.create_task(run(0))
            await asyncio.sleep(0.1)  # the second job joins while "shared" is running
            t2 = tg.create_task(run(1))
    assert world.execs.count("shared") == 1
    assert world.execs.count("src") == 1
    assert t1.result()["/shared"] == t2.result()["/shared"] == "shared"
    for stream, reader in zip(streams, readers, strict=True):
        stream.close()
        events = [e async for e in reader]
        logs = [e for e in events if isinstance(e, LogEvent)]
        assert [e.data for e in logs] == [b"hello\n"]  # the late joiner got it replayed
    assert world.store.live_refs() == 0


@run_async
async def test_cancelling_one_of_two_jobs_keeps_the_shared_vertex_running() -> None:
    world = World()
    started = asyncio.Event()

    def graph(tag: str) -> Vertex:
        shared = vtx(FakeOp(world, "shared", sleep=0.3, started=started))
        return vtx(FakeOp(world, f"top-{tag}", selectors=[None]), shared)

    async with Solver(world.keys, world.store) as solver:

        async def run(tag: str) -> str:
            async with solver.job() as job:
                result = await solver.solve(graph(tag), job)
                await result.release()
                return result.id

        async with asyncio.TaskGroup() as tg:
            t1 = tg.create_task(run("1"))
            t2 = tg.create_task(run("2"))
            await started.wait()
            t1.cancel()
    assert t1.cancelled()
    assert t2.result().startswith("top-2")
    assert world.cancelled == []
    assert world.execs.count("shared") == 1
    assert world.store.live_refs() == 0


class _SlowToStop(FakeOp):
    """An op that takes a moment to stop when cancelled (a container being killed)."""

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        try:
            return await super().exec(ctx, inputs)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            raise


@run_async
async def test_a_second_cancel_during_clean_up_still_releases_everything() -> None:
    """A build cancelled twice (the daemon cancels it, then its connection drops): the job's
    clean-up runs to its end, so the finished base step's result is not held forever."""
    world = World()
    started = asyncio.Event()
    base = vtx(FakeOp(world, "base"))
    slow = vtx(_SlowToStop(world, "slow", sleep=30, started=started, selectors=[None]), base)
    async with Solver(world.keys, world.store) as solver:

        async def run() -> None:
            async with solver.job() as job:
                await solver.solve(slow, job)

        task = asyncio.create_task(run())
        await started.wait()
        task.cancel()
        await asyncio.sleep(0.05)  # the job's clean-up now waits for "slow" to stop
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert solver.active_digests == []
        assert world.store.live_refs() == 0


@run_async
async def test_cancelling_the_only_job_cancels_the_running_op() -> None:
    world = World()
    started = asyncio.Event()
    slow = vtx(FakeOp(world, "slow", sleep=30, started=started))
    top = vtx(FakeOp(world, "top", selectors=[None]), slow)
    stream = ProgressStream()
    reader = stream.subscribe()
    async with Solver(world.keys, world.store) as solver:

        async def run() -> None:
            async with solver.job(progress=stream) as job:
                await solver.solve(top, job)

        task = asyncio.create_task(run())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert solver.active_digests == []
    stream.close()
    assert world.cancelled == ["slow"]
    state = final_state([e async for e in reader])
    assert state[slow.digest].error == "context canceled"
    assert state[top.digest].started is None  # never needed: keeps its first form


@run_async
async def test_first_error_cancels_siblings_and_names_the_vertex() -> None:
    world = World()
    bad = vtx(FakeOp(world, "bad", sleep=0.05, fail=RuntimeError("boom")))
    slow = vtx(FakeOp(world, "slow", sleep=30))
    top = vtx(FakeOp(world, "top", selectors=[None, None]), bad, slow)
    stream = ProgressStream()
    reader = stream.subscribe()
    t0 = time.monotonic()
    with pytest.raises(SolveError) as info:
        await solve_once(world, top, stream)
    assert time.monotonic() - t0 < 5
    assert info.value.digest == bad.digest
    assert info.value.description == "bad"
    assert "boom" in str(info.value)
    assert world.cancelled == ["slow"]
    assert "top" not in world.execs
    stream.close()
    state = final_state([e async for e in reader])
    assert state[bad.digest].error == "boom"
    assert state[slow.digest].error == "context canceled"
    assert world.store.live_refs() == 0


@run_async
async def test_exec_error_passes_through_with_digest_and_description() -> None:
    world = World()
    failing = FakeOp(world, "run", fail=ExecError(["/bin/sh", "-c", "exit 3"], 3, ["oops"]))
    src = vtx(FakeOp(world, "src"))
    run = vtx(failing, src)
    with pytest.raises(ExecError) as info:
        await solve_once(world, run)
    err = info.value
    assert err.digest == run.digest and err.description == "run"
    assert err.exit_code == 3 and err.output_tail == ["oops"]
    assert str(err) == (
        '[run] process "/bin/sh -c exit 3" did not complete successfully: exit code: 3'
    )
    # A failed run saves nothing: the next solve runs it again.
    world.execs.clear()
    with pytest.raises(ExecError):
        await solve_once(world, run)
    assert world.execs == ["run"]


@run_async
async def test_failure_in_a_shared_vertex_reaches_both_jobs() -> None:
    world = World()
    bad = vtx(FakeOp(world, "bad", sleep=0.1, fail=RuntimeError("nope")))
    async with Solver(world.keys, world.store) as solver:

        async def run(tag: str) -> None:
            top = vtx(FakeOp(world, f"top-{tag}", selectors=[None]), bad)
            async with solver.job() as job:
                await solver.solve(top, job)

        results = await asyncio.gather(run("1"), run("2"), return_exceptions=True)
    assert world.execs == ["bad"]
    assert all(isinstance(r, SolveError) and r.digest == bad.digest for r in results)


# -- progress -------------------------------------------------------------------------------


@run_async
async def test_progress_order_for_a_run() -> None:
    world = World()
    src = vtx(FakeOp(world, "src"))
    run = vtx(FakeOp(world, "run", selectors=[None], logs=[b"out"]), src)
    stream = ProgressStream()
    reader = stream.subscribe()
    await solve_once(world, run, stream)
    stream.close()
    events = [e async for e in reader]
    # Every vertex is announced first, with no timestamps.
    first = [e for e in events[:2] if isinstance(e, VertexEvent)]
    assert {e.digest for e in first} == {src.digest, run.digest}
    assert all(e.started is None and e.completed is None for e in first)
    assert first[0].inputs == () or first[1].inputs == (src.digest,)
    run_events = [
        e
        for e in events
        if (isinstance(e, VertexEvent) and e.digest == run.digest)
        or (isinstance(e, LogEvent) and e.vertex == run.digest)
    ]

    def kind(event: Event) -> str:
        if isinstance(event, LogEvent):
            return "log"
        assert isinstance(event, VertexEvent)
        if event.started is None:
            return "new"
        return "done" if event.completed is not None else "start"

    assert [kind(e) for e in run_events] == ["new", "start", "log", "done"]
    done = run_events[-1]
    assert isinstance(done, VertexEvent) and not done.cached and not done.error
    assert done.started is not None and done.completed is not None
    src_events = vertex_events(events, src.digest)
    # Source: announced, then keying started/completed (not cached), then run started/completed.
    assert [(e.started is not None, e.completed is not None) for e in src_events] == [
        (False, False),
        (True, False),
        (True, True),
        (True, False),
        (True, True),
    ]


@run_async
async def test_two_outputs_and_multi_maps() -> None:
    world = World()

    class TwoMaps(FakeOp):
        async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
            self.world.cache_maps.append(f"{self.name}#{index}")
            return CacheMap(f"{self.key}#{index}"), index == 1

    src = vtx(TwoMaps(world, "img", outputs=2))
    left = vtx(FakeOp(world, "left", selectors=[None]), (src, 0))
    right = vtx(FakeOp(world, "right", selectors=[None]), (src, 1))
    top = vtx(FakeOp(world, "top", selectors=[None, None]), left, right)
    await solve_once(world, top)
    assert world.execs.count("img") == 1
    assert world.cache_maps.count("img#0") == world.cache_maps.count("img#1") == 1

    # Saved under both maps: a source whose first map changed still hits through map 2.
    class NewFirstMap(TwoMaps):
        async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
            cache_map, last = await super().cache_map(ctx, index)
            if index == 0:
                return CacheMap("op:img-repushed"), last
            return cache_map, last

    world.execs.clear()
    src2 = vtx(NewFirstMap(world, "img", key="op:img", outputs=2))
    left2 = vtx(FakeOp(world, "left", selectors=[None]), (src2, 0))
    await solve_once(world, left2)
    assert world.execs == []


@run_async
async def test_content_key_of_a_rebuilt_input_keeps_the_consumer_cached() -> None:
    world = World()

    def graph(version: str, files: dict[str, str]) -> Vertex:
        src = vtx(FakeOp(world, "src", key=f"op:src-{version}", files=files))
        build = vtx(FakeOp(world, "build", selectors=[None]), src)
        return vtx(FakeOp(world, "copy", selectors=["/bin"]), build)

    await solve_once(world, graph("v1", {"/bin": "same", "/doc": "1"}))
    world.execs.clear()
    await solve_once(world, graph("v2", {"/bin": "same", "/doc": "2"}))
    assert world.execs == ["src", "build"]  # the builder re-ran; the copy of /bin did not


@run_async
async def test_preprocess_runs_once_before_content_key_and_exec() -> None:
    world = World()
    calls: list[str] = []

    class Prep(FakeOp):
        async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
            async def preprocess(result: Result) -> None:
                calls.append(f"prep {result.id.split('-')[0]}")

            async def compute(result: Result) -> str:
                calls.append("digest")
                return "sha256:" + "0" * 64

            return CacheMap(self.key, (Dep("", compute, preprocess),)), True

        async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
            calls.append("exec")
            return await super().exec(ctx, inputs)

    src = vtx(FakeOp(world, "src"))
    await solve_once(world, vtx(Prep(world, "use"), src))
    assert calls == ["prep src", "digest", "exec"]


@run_async
async def test_cache_map_error_names_the_vertex() -> None:
    world = World()

    class Broken(FakeOp):
        async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
            raise OSError("registry unreachable")

    src = vtx(Broken(world, "img"))
    top = vtx(FakeOp(world, "top", selectors=[None]), src)
    stream = ProgressStream()
    reader = stream.subscribe()
    with pytest.raises(SolveError, match="registry unreachable") as info:
        await solve_once(world, top, stream)
    assert info.value.digest == src.digest
    assert isinstance(info.value.__cause__, OSError)
    stream.close()
    assert final_state([e async for e in reader])[src.digest].error == "registry unreachable"
    assert world.execs == []


@run_async
async def test_normal_vertex_joins_a_running_ignore_cache_one_but_not_the_reverse() -> None:
    world = World()
    started = asyncio.Event()

    def run_vertex(ignore_cache: bool) -> Vertex:
        op = FakeOp(world, "run", sleep=0.2, started=started)
        return vtx(op, ignore_cache=ignore_cache)

    async def both(first_ignores: bool) -> None:
        async with Solver(world.keys, world.store) as solver:

            async def run(ignore_cache: bool) -> None:
                async with solver.job() as job:
                    result = await solver.solve(run_vertex(ignore_cache), job)
                    await result.release()

            started.clear()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(run(first_ignores))
                await started.wait()
                tg.create_task(run(not first_ignores))

    await both(first_ignores=True)
    assert world.execs == ["run"]  # the normal one joined the fresh run
    world.execs.clear()
    # A normal vertex is running (no cache: prune it); an ignore_cache one must run anew.
    world.keys = type(world.keys)()
    await both(first_ignores=False)
    assert world.execs == ["run", "run"]


def session_source(world: World, files: dict[str, str]) -> Vertex:
    """A local-like source: its cache key is ``random:`` and new in every build (§2.3)."""
    key = "random:" + hashlib.sha256(str(next(_ids)).encode()).hexdigest()
    op = FakeOp(world, "local", key=key, files=files)
    return Vertex(digest=f"sha256:{key[7:]}", op=op, name="local")


def local_chain(world: World, files: dict[str, str]) -> dict[str, Vertex]:
    """local -> copy (content key over /a) -> mkdir (plain) -> out (plain), plus a fan-in."""
    local = session_source(world, files)
    copy = vtx(FakeOp(world, "copy", selectors=["/a"]), local)
    mkdir = vtx(FakeOp(world, "mkdir", selectors=[None]), copy)
    out = vtx(FakeOp(world, "out", selectors=[None]), mkdir)
    img = vtx(FakeOp(world, "img"))
    both = vtx(FakeOp(world, "both", selectors=[None, None]), out, img)
    return {"local": local, "copy": copy, "mkdir": mkdir, "out": out, "both": both}


@run_async
async def test_children_of_a_vertex_loaded_through_its_content_key_are_cached() -> None:
    world = World()
    first = await solve_once(world, local_chain(world, {"/a": "1"})["out"])
    assert world.execs == ["local", "copy", "mkdir", "out"]

    # A new build (fresh solver, same storage): the local source gets a new random key, the
    # copy is found through the content key of /a, and everything built on it must load too.
    world.execs.clear()
    world.store.loads.clear()
    graph = local_chain(world, {"/a": "1", "/b": "other"})
    stream = ProgressStream()
    reader = stream.subscribe()
    second = await solve_once(world, graph["out"], stream)
    stream.close()
    state = final_state([e async for e in reader])
    assert world.execs == ["local"]  # only the source runs (its key is random)
    assert second == first
    for name in ("copy", "mkdir", "out"):
        assert state[graph[name].digest].cached, name
    assert world.store.live_refs() == 0

    # Again, with a head that fans in a plain source: still nothing but the local runs.
    world.execs.clear()
    await solve_once(world, local_chain(world, {"/a": "1"})["both"])
    assert sorted(world.execs) == ["both", "img", "local"]
    world.execs.clear()
    await solve_once(world, local_chain(world, {"/a": "1"})["both"])
    assert world.execs == ["local"]

    # New content under the selected path: the copy and everything on it run again.
    world.execs.clear()
    changed = await solve_once(world, local_chain(world, {"/a": "2"})["out"])
    assert world.execs == ["local", "copy", "mkdir", "out"]
    assert changed["/a"] == "2"


@run_async
async def test_keys_gained_below_an_uncached_vertex_reach_its_consumers() -> None:
    world = World()

    def graph(ignore: bool) -> Vertex:
        src = vtx(FakeOp(world, "src", files={"/etc": "x"}), ignore_cache=ignore)
        a = vtx(FakeOp(world, "a", selectors=[None]), src)
        b = vtx(FakeOp(world, "b", selectors=[None]), a)
        return vtx(FakeOp(world, "c", selectors=[None]), b)

    await solve_once(world, graph(False))
    world.execs.clear()
    # Only the source ignores the cache: it runs and is saved under its old root key, so
    # a, b and c (whose definition keys are unknown without it) are all found from it.
    await solve_once(world, graph(True))
    assert world.execs == ["src"]
