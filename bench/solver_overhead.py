"""Solver overhead per vertex on a synthetic graph of trivial ops (no I/O).

Graph: 50 chains of 100 vertices, each chain starting at a source; every 7th vertex also
takes the previous vertex of a neighbouring chain (fan-in), and one head vertex joins all
chain tails: 5,000 vertices in all. Prints microseconds per vertex for a cold solve (every op
runs and is saved) and a fully cached solve (a new solver over the same key storage, as after
a daemon restart), then the cached solve of a single 5,000-long chain.

    python bench/solver_overhead.py [--profile]

Target: < 100 us per cached vertex.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import pstats
import time
from collections.abc import Sequence

from bkcore.solver.memkeys import MemoryKeyStorage
from bkcore.solver.memresults import MemoryResultStore
from bkcore.solver.scheduler import Solver
from bkcore.solver.types import CacheMap, Dep, OpContext, Result, Vertex


class TrivialOp:
    def __init__(self, store: MemoryResultStore, key: str, n_inputs: int) -> None:
        self.store = store
        self.key = key
        self.deps = tuple(Dep() for _ in range(n_inputs))

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def worker(self) -> str:
        return "bench"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        return CacheMap(self.key, self.deps), True

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        return [self.store.add(self.key + "-result")]


def _vertex(store: MemoryResultStore, key: str, inputs: Sequence[Vertex]) -> Vertex:
    text = key + "|" + ",".join(v.digest for v in inputs)
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    op = TrivialOp(store, "sha256:" + hashlib.sha256(key.encode()).hexdigest(), len(inputs))
    return Vertex(digest, op, tuple((v, 0) for v in inputs), name=key)


def mixed_graph(store: MemoryResultStore, chains: int = 50, length: int = 100) -> Vertex:
    columns: list[list[Vertex]] = [[] for _ in range(chains)]
    for step in range(length):
        for c in range(chains):
            if step == 0:
                columns[c].append(_vertex(store, f"src-{c}", []))
                continue
            inputs = [columns[c][-1]]
            if step % 7 == 0:
                inputs.append(columns[(c + 1) % chains][step - 1])
            columns[c].append(_vertex(store, f"op-{c}-{step}", inputs))
    return _vertex(store, "head", [col[-1] for col in columns[:-1]] + [columns[-1][-2]])


def long_chain(store: MemoryResultStore, length: int = 5000) -> Vertex:
    vertex = _vertex(store, "chain-0", [])
    for i in range(1, length):
        vertex = _vertex(store, f"chain-{i}", [vertex])
    return vertex


def count(head: Vertex) -> int:
    seen: set[int] = set()
    stack = [head]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        stack.extend(i for i, _ in v.inputs)
    return len(seen)


class GcClock:
    """CPU seconds spent in the cyclic garbage collector."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.total += time.process_time() - self._start


GC = GcClock()


async def solve(
    keys: MemoryKeyStorage, store: MemoryResultStore, head: Vertex
) -> tuple[float, float, float]:
    """Wall, CPU and GC seconds of one solve (CPU time is steadier on a busy machine)."""
    async with Solver(keys, store, parallelism=64) as solver:
        t0, c0, g0 = time.perf_counter(), time.process_time(), GC.total
        async with solver.job() as job:
            result = await solver.solve(head, job)
        elapsed = time.perf_counter() - t0, time.process_time() - c0, GC.total - g0
    await result.release()
    return elapsed


async def run(profile: bool) -> None:
    for label, build in (("mixed graph", mixed_graph), ("single chain", long_chain)):
        keys, store = MemoryKeyStorage(), MemoryResultStore()
        n = count(build(store))
        cold = await solve(keys, store, build(store))
        runs = [await solve(keys, store, build(store)) for _ in range(5)]
        best = min(runs, key=lambda r: r[1])
        print(
            f"{label:13} {n} vertices, us/vertex wall/cpu/gc: "
            f"cold {cold[0] * 1e6 / n:6.1f} /{cold[1] * 1e6 / n:6.1f} /{cold[2] * 1e6 / n:5.1f}   "
            f"cached {best[0] * 1e6 / n:6.1f} /{best[1] * 1e6 / n:6.1f} /{best[2] * 1e6 / n:5.1f}"
            "  (cached: best cpu of 5; target < 100)"
        )
    if profile:
        keys, store = MemoryKeyStorage(), MemoryResultStore()
        await solve(keys, store, mixed_graph(store))
        head = mixed_graph(store)
        profiler = cProfile.Profile()
        profiler.enable()
        await solve(keys, store, head)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="profile the cached solve")
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="keep CPython's default GC threshold (bkcore build raises it: controller.tune_gc)",
    )
    args = parser.parse_args()
    if not args.default_gc:
        from bkcore.controller import tune_gc

        tune_gc()
    asyncio.run(run(args.profile))


if __name__ == "__main__":
    main()
