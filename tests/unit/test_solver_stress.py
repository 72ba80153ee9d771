"""Random graphs, jobs sharing vertices, random failures and cancellations: every result is
right, nothing leaks, nothing stays active, and the loop reports no lost errors."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
from collections.abc import Sequence
from typing import Any

import pytest

from bkcore.errors import SolveError
from bkcore.progress import ProgressStream
from bkcore.solver.memkeys import MemoryKeyStorage
from bkcore.solver.memresults import MemoryResultStore
from bkcore.solver.scheduler import Solver
from bkcore.solver.types import CacheMap, Dep, OpContext, Result, Vertex

_ids = itertools.count()


class RandomOp:
    def __init__(
        self, store: MemoryResultStore, key: str, n_inputs: int, rng: random.Random
    ) -> None:
        self.store = store
        self.key = key
        self.n_inputs = n_inputs
        self.fail = rng.random() < 0.03
        self.sleep = rng.random() * 0.01
        self.outputs = rng.choice([1, 1, 1, 2])
        self.content = [rng.random() < 0.3 for _ in range(n_inputs)]

    @property
    def num_outputs(self) -> int:
        return self.outputs

    @property
    def worker(self) -> str:
        return "w"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        await asyncio.sleep(0.001)

        async def content_digest(result: Result) -> str:
            await asyncio.sleep(0)
            return "sha256:" + hashlib.sha256(result.id.split("#")[0].encode()).hexdigest()

        deps = tuple(Dep("s", content_digest if c else None) for c in self.content)
        return CacheMap(self.key, deps), True

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        ctx.progress.log(1, b"x")
        await asyncio.sleep(self.sleep)
        if self.fail:
            raise RuntimeError(f"fail {self.key}")
        return [self.store.add(f"{self.key}#{next(_ids)}") for _ in range(self.outputs)]


def random_graph(store: MemoryResultStore, seed: int, size: int) -> list[Vertex]:
    rng = random.Random(seed)
    vertices: list[Vertex] = []
    for i in range(size):
        picked = rng.sample(vertices, min(len(vertices), rng.randint(0, 3)))
        edges = tuple((v, rng.randrange(v.op.num_outputs)) for v in picked)
        key = f"k{i}"
        text = key + repr([(v.digest, o) for v, o in edges])
        digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        op = RandomOp(store, key, len(edges), rng)
        vertices.append(Vertex(digest, op, edges, key, ignore_cache=rng.random() < 0.1))
    return vertices


async def scenario(seed: int) -> list[str]:
    loop_errors: list[str] = []

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        loop_errors.append(str(context.get("message")))

    asyncio.get_running_loop().set_exception_handler(on_error)
    rng = random.Random(seed)
    keys, store = MemoryKeyStorage(), MemoryResultStore()
    for round_ in range(3):
        async with Solver(keys, store, parallelism=3) as solver:

            async def job(index: int, graph_seed: int) -> None:
                graph = random_graph(store, graph_seed, 30)
                heads = random.Random(seed + index).sample(graph, 3)
                async with solver.job(progress=ProgressStream()) as handle:
                    for head in heads:
                        try:
                            result = await solver.solve(head, handle, head.op.num_outputs - 1)
                        except SolveError:
                            continue
                        assert result.id.split("#")[0] == head.name
                        await result.release()

            tasks = [asyncio.create_task(job(i, seed * 100 + round_)) for i in range(4)]
            await asyncio.sleep(rng.random() * 0.03)
            for task in tasks:
                if rng.random() < 0.4:
                    task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(
                    outcome, asyncio.CancelledError
                ):
                    raise outcome
            assert solver.active_digests == []
        assert store.live_refs() == 0
    return loop_errors


@pytest.mark.parametrize("seed", range(6))
def test_random_jobs_with_cancellation(seed: int) -> None:
    assert asyncio.run(scenario(seed)) == []
