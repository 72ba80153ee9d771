"""build_graph + SourceOpAdapter driven by the real Solver (in-memory keys and results)."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bkcore.engine import Engine
from bkcore.llb import pb
from bkcore.llb.digest import marshal, op_digest, present
from bkcore.llb.platforms import Platform
from bkcore.ops.cachejson import merge_document
from bkcore.ops.load import build_graph
from bkcore.registry import Registry
from bkcore.solver.memkeys import MemoryKeyStorage
from bkcore.solver.memresults import MemoryResult, MemoryResultStore
from bkcore.solver.scheduler import Solver
from bkcore.solver.types import CacheMap, Dep, OpContext, Result

SOURCE_MODULE = """
class Instance:
    def __init__(self, log, identifier):
        self.log, self.identifier = log, identifier

    async def cache_key(self, ctx, index):
        self.log.append(("key", self.identifier, index, [j.values for j in ctx.jobs()]))
        name = self.identifier.split("://", 1)[1]
        if name.startswith("sess"):
            return "session:" + name + ":" + str(ctx.jobs()[0].values["session"]), True
        return ("content-" if index == 0 else "chain-") + name, index == 1

    async def snapshot(self, ctx):
        self.log.append(("snapshot", self.identifier))
        store = ctx.engine.results
        return store.add("r-" + self.identifier + "-" + str(len(self.log)), self.identifier)


class Source:
    def __init__(self):
        self.log = []

    def identify(self, identifier, attrs, platform):
        return Instance(self.log, identifier)


SOURCE = Source()
"""


class Merge:
    """Minimal merge adapter with the real cache-map document."""

    runs: list[str] = []

    def __init__(self, op: pb.Op, digest: str, engine: Engine, platform: Platform) -> None:
        self.doc, self.n, self.engine = merge_document(op.merge), len(op.inputs), engine

    num_outputs = 1
    worker = "local"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        return CacheMap(digest=self.doc, deps=tuple(Dep() for _ in range(self.n))), True

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        store: MemoryResultStore = cast(Any, self.engine).results
        payload = "+".join(str(cast(MemoryResult, r).payload) for r in inputs)
        Merge.runs.append(payload)
        return [store.add(f"m{len(Merge.runs)}", payload)]


@pytest.fixture
def source_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = "bkcore_test_pipeline_src_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SOURCE_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _definition(*identifiers: str) -> pb.Definition:
    raws = [
        marshal(
            pb.Op(source=pb.SourceOp(identifier=i), constraints=present(pb.WorkerConstraints()))
        )
        for i in identifiers
    ]
    merge = pb.Op(
        inputs=[pb.Input(digest=op_digest(r)) for r in raws],
        merge=pb.MergeOp(inputs=[pb.MergeInput(input=i) for i in range(len(raws))]),
    )
    raws.append(marshal(merge))
    raws.append(marshal(pb.Op(inputs=[pb.Input(digest=op_digest(raws[-1]))])))
    return pb.Definition(def_=raws)


def test_sources_key_run_and_cache_through_the_solver(source_module: str) -> None:
    registry = Registry("sources")
    registry.add("fake", f"{source_module}:SOURCE")
    results = MemoryResultStore()
    engine = cast(
        Engine,
        SimpleNamespace(
            platform="linux/amd64",
            plugins=SimpleNamespace(registry=lambda family: registry),
            results=results,
        ),
    )
    log: list[Any] = registry.load("fake").log
    keys = MemoryKeyStorage()
    Merge.runs.clear()

    async def solve(definition: pb.Definition, session: str) -> object:
        head = build_graph(definition, engine, adapters={"merge": Merge})
        async with Solver(keys, results) as solver:
            async with solver.job(values={"session": session}) as job:
                result = await solver.solve(head.vertex, job, head.output)
                payload = cast(MemoryResult, result).payload
                await result.release()
        return payload

    first = asyncio.run(solve(_definition("fake://a", "fake://b"), "s1"))
    assert first == "fake://a+fake://b"
    assert ("snapshot", "fake://a") in log and ("snapshot", "fake://b") in log
    assert ("key", "fake://a", 0, [{"session": "s1"}]) in log

    log.clear()
    second = asyncio.run(solve(_definition("fake://a", "fake://b"), "s2"))
    assert second == first and len(Merge.runs) == 1
    assert not [e for e in log if e[0] == "snapshot"]  # loaded from the cache

    # a session-bound source gets a random: key: new session -> runs again
    log.clear()
    third = asyncio.run(solve(_definition("fake://a", "fake://sess"), "s3"))
    fourth = asyncio.run(solve(_definition("fake://a", "fake://sess"), "s4"))
    assert third == fourth == "fake://a+fake://sess"
    assert [e for e in log if e[0] == "snapshot"] == [("snapshot", "fake://sess")] * 2
    assert len(Merge.runs) == 3
    assert results.live_refs() == 0
