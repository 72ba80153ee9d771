"""The solver's default sets no bound on concurrent ops per worker (BuildKit without
``max-parallelism``): independent stages waiting on processes all run at once, however few
CPUs the machine has (bench/dockerfile.py's ``4 x RUN sleep 1`` row)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence

import pytest

from bkcore.solver.memkeys import MemoryKeyStorage
from bkcore.solver.memresults import MemoryResult, MemoryResultStore
from bkcore.solver.scheduler import Solver
from bkcore.solver.types import CacheMap, Dep, OpContext, Result, Vertex


class Counter:
    def __init__(self, store: MemoryResultStore) -> None:
        self.store = store
        self.running = 0
        self.peak = 0
        self.all_started = asyncio.Event()
        self.expected = 0


class WaitOp:
    """Waits until every leaf has started (or is cancelled by the test's timeout)."""

    def __init__(self, counter: Counter, name: str, inputs: int = 0, wait: bool = True) -> None:
        self.counter = counter
        self.name = name
        self.inputs = inputs
        self.wait = wait

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def worker(self) -> str:
        return "w"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        return CacheMap(f"op:{self.name}", tuple(Dep() for _ in range(self.inputs))), True

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        c = self.counter
        c.running += 1
        c.peak = max(c.peak, c.running)
        try:
            if self.wait:
                if c.running == c.expected:
                    c.all_started.set()
                await c.all_started.wait()
        finally:
            c.running -= 1
        return [c.store.add(f"{self.name}-out", {f"/{self.name}": self.name})]


def vertex(op: WaitOp, *inputs: Vertex) -> Vertex:
    text = op.name + "|" + ",".join(v.digest for v in inputs)
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return Vertex(digest=digest, op=op, inputs=tuple((v, 0) for v in inputs), name=op.name)


async def solve(leaves: int, **kw: int) -> Counter:
    store = MemoryResultStore()
    counter = Counter(store)
    counter.expected = leaves
    tops = [vertex(WaitOp(counter, f"leaf{i}")) for i in range(leaves)]
    top = vertex(WaitOp(counter, "top", inputs=leaves, wait=False), *tops)
    async with Solver(MemoryKeyStorage(), store, **kw) as solver:
        async with solver.job() as job:
            # Each leaf waits for all the others: with a bound below `leaves` this never ends.
            result = await asyncio.wait_for(solver.solve(top, job), 30)
    assert isinstance(result, MemoryResult)
    await result.release()
    return counter


def test_default_runs_more_independent_ops_than_cpus_at_once() -> None:
    leaves = (os.cpu_count() or 1) * 2 + 2
    counter = asyncio.run(solve(leaves))
    assert counter.peak == leaves


def test_bounded_solver_deadlocks_the_waiting_leaves() -> None:
    # The same graph with a bound below the number of leaves cannot finish: proves the first
    # test depends on the default being unbounded.
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(solve(4, parallelism=2), 2))
