"""Merge and diff op adapters: cache maps (solver.md §2.4), results on real snapshots, and
cache hits through the solver with the persistent key store."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import betterproto
import pytest

from bkcore.cache.results import SnapshotResult, commit_result, prepare, results_for, view
from bkcore.cache.snapshots import COPY, OVERLAY, detect_driver
from bkcore.cache.store import CacheStore
from bkcore.engine import Engine
from bkcore.errors import DefinitionError
from bkcore.llb import pb
from bkcore.llb.dump import load_definition
from bkcore.llb.platforms import Platform
from bkcore.ops.mergediff import DiffOpAdapter, MergeOpAdapter
from bkcore.solver.scheduler import Solver
from bkcore.solver.types import CacheMap, Dep, OpContext, Result, Vertex

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
PLATFORM = Platform("linux", "amd64", "")


def _drivers() -> list[str]:
    # Overlay is exercised too where this machine can mount it (root); copy always.
    probe = Path("/tmp") / f"bk-mergediff-probe-{id(object())}"
    probe.mkdir(exist_ok=True)
    try:
        return [COPY, OVERLAY] if detect_driver(probe) == OVERLAY else [COPY]
    finally:
        probe.rmdir()


DRIVERS = _drivers()


def _engine(store: CacheStore) -> Engine:
    return Engine(
        store=store, worker=cast(Any, None), sessions=cast(Any, None), plugins=cast(Any, None)
    )


def _ctx(name: str) -> OpContext:
    vertex = Vertex(digest="sha256:" + name, op=cast(Any, None), name=name)
    return OpContext(vertex=vertex, progress=cast(Any, None), jobs=lambda: [])


def _inputs(n: int) -> list[pb.Input]:
    return [pb.Input(digest=f"sha256:{i}", index=0) for i in range(n)]


def _merge_op(order: Sequence[int], n_inputs: int) -> pb.Op:
    inputs = []
    for i in order:
        m = pb.MergeInput(input=i)
        m._serialized_on_wire = True
        inputs.append(m)
    return pb.Op(inputs=_inputs(n_inputs), merge=pb.MergeOp(inputs=inputs))


def _diff_op(lower: int, upper: int, n_inputs: int) -> pb.Op:
    low = pb.LowerDiffInput(input=lower)
    up = pb.UpperDiffInput(input=upper)
    low._serialized_on_wire = True
    up._serialized_on_wire = True
    return pb.Op(inputs=_inputs(n_inputs), diff=pb.DiffOp(lower=low, upper=up))


async def _snap(
    store: CacheStore, files: dict[str, str | None], parent: Result | None = None
) -> SnapshotResult:
    """A committed snapshot: write the files (None: delete) on top of ``parent``."""
    m = await prepare(store, parent, "test")
    root = m.mount()
    for name, text in files.items():
        if text is None:
            (root / name).unlink()
        else:
            (root / name).write_text(text)
    return await commit_result(store, m)


async def _tree(result: Result) -> dict[str, str]:
    async with view(result) as root:
        return {p.name: p.read_text() for p in sorted(root.iterdir())}


def test_cache_maps_of_vector_v4_are_the_json_text() -> None:
    defn = load_definition((VECTORS / "v4_merge_diff.llb").read_bytes(), "v4")
    ops = {}
    for raw in defn.def_:
        op = pb.Op().parse(raw)
        ops[betterproto.which_one_of(op, "op")[0]] = op
    engine = cast(Engine, None)

    async def main() -> tuple[tuple[CacheMap, bool], tuple[CacheMap, bool]]:
        merge = MergeOpAdapter(ops["merge"], "sha256:m", engine, PLATFORM)
        diff = DiffOpAdapter(ops["diff"], "sha256:d", engine, PLATFORM)
        assert merge.num_outputs == diff.num_outputs == 1
        return await merge.cache_map(_ctx("m"), 0), await diff.cache_map(_ctx("d"), 0)

    (mmap, mlast), (dmap, dlast) = asyncio.run(main())
    assert mlast and dlast
    assert (
        mmap.digest == '{"Type":"buildkit.merge.v0","Merge":{"inputs":[{"input":0},{"input":1}]}}'
    )
    assert dmap.digest == (
        '{"Type":"buildkit.diff.v0","Diff":{"lower":{"input":0},"upper":{"input":1}}}'
    )
    # No selectors and no content keys: keyed by the inputs' keys only.
    assert mmap.deps == (Dep(), Dep()) and dmap.deps == (Dep(), Dep())


def test_scratch_side_diff_has_one_dep_and_index_checks() -> None:
    async def main() -> CacheMap:
        diff = DiffOpAdapter(_diff_op(-1, 0, 1), "sha256:d", cast(Engine, None), PLATFORM)
        cmap, _ = await diff.cache_map(_ctx("d"), 0)
        return cmap

    cmap = asyncio.run(main())
    assert cmap.digest == (
        '{"Type":"buildkit.diff.v0","Diff":{"lower":{"input":-1},"upper":{"input":0}}}'
    )
    assert cmap.deps == (Dep(),)
    with pytest.raises(DefinitionError, match="out of range"):
        DiffOpAdapter(_diff_op(0, 2, 2), "sha256:d", cast(Engine, None), PLATFORM)
    with pytest.raises(DefinitionError, match="merge input 3"):
        MergeOpAdapter(_merge_op([0, 3], 2), "sha256:m", cast(Engine, None), PLATFORM)


@pytest.mark.parametrize("driver", DRIVERS)
def test_merge_stacks_inputs_and_replays_diff_deletions(tmp_path: Path, driver: str) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path, driver)
        engine = _engine(store)
        a = await _snap(store, {"f": "a", "x": "x"})
        b = await _snap(store, {"f": "b", "y": "y"})
        merge = MergeOpAdapter(_merge_op([0, 1], 2), "sha256:m", engine, PLATFORM)
        (ab,) = await merge.exec(_ctx("merge ab"), [a, b])
        assert await _tree(ab) == {"f": "b", "x": "x", "y": "y"}
        reverse = MergeOpAdapter(_merge_op([1, 0], 2), "sha256:m2", engine, PLATFORM)
        (ba,) = await reverse.exec(_ctx("merge ba"), [a, b])
        assert await _tree(ba) == {"f": "a", "x": "x", "y": "y"}
        assert store.snapshots.get(ab.id).description == "merge ab"

        # diff(base, base - x + z) carries z and the deletion of x.
        base = await _snap(store, {"x": "x", "keep": "k"})
        upper = await _snap(store, {"x": None, "z": "z"}, parent=base)
        diff = DiffOpAdapter(_diff_op(0, 1, 2), "sha256:d", engine, PLATFORM)
        (changes,) = await diff.exec(_ctx("diff"), [base, upper])
        assert await _tree(changes) == {"z": "z"}
        other = await _snap(store, {"x": "mine", "w": "w"})
        (applied,) = await merge.exec(_ctx("apply"), [other, changes])
        assert await _tree(applied) == {"w": "w", "z": "z"}

        results = results_for(store)
        for r in (a, b, ab, ba, base, upper, changes, other, applied):
            await r.release()
        assert results.live_refs() == 0
        assert store.prune() > 0 and store.snapshots.all() == []
        await results.close()
        store.close()

    asyncio.run(main())


def test_degenerate_merges_and_diffs(tmp_path: Path) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path, COPY)
        engine = _engine(store)
        a = await _snap(store, {"f": "a"})
        b = await _snap(store, {"g": "b"}, parent=a)
        # One input: that input itself (a new reference).
        (one,) = await MergeOpAdapter(_merge_op([0], 1), "sha256:1", engine, PLATFORM).exec(
            _ctx("one"), [a]
        )
        assert one.id == a.id and results_for(store).refs(a.id) == 2
        # Scratch to upper: upper itself.
        (up,) = await DiffOpAdapter(_diff_op(-1, 0, 1), "sha256:2", engine, PLATFORM).exec(
            _ctx("up"), [b]
        )
        assert up.id == b.id
        # A snapshot against itself: empty.
        (same,) = await DiffOpAdapter(_diff_op(0, 0, 1), "sha256:3", engine, PLATFORM).exec(
            _ctx("same"), [a]
        )
        assert same.id != a.id and await _tree(same) == {}
        # Both sides scratch, and a merge of scratch only: empty snapshots.
        (none,) = await DiffOpAdapter(_diff_op(-1, -1, 0), "sha256:4", engine, PLATFORM).exec(
            _ctx("none"), []
        )
        assert await _tree(none) == {}
        (nomerge,) = await MergeOpAdapter(_merge_op([-1], 0), "sha256:5", engine, PLATFORM).exec(
            _ctx("nomerge"), []
        )
        assert await _tree(nomerge) == {}
        # Lower to scratch: merged on top of lower, it removes lower's entries.
        (gone,) = await DiffOpAdapter(_diff_op(0, -1, 1), "sha256:6", engine, PLATFORM).exec(
            _ctx("gone"), [b]
        )
        assert await _tree(gone) == {}
        keep = await _snap(store, {"f": "kept?", "h": "h"})
        (onto,) = await MergeOpAdapter(_merge_op([0, 1], 2), "sha256:7", engine, PLATFORM).exec(
            _ctx("onto"), [keep, gone]
        )
        assert await _tree(onto) == {"h": "h"}
        for r in (a, b, one, up, same, none, nomerge, gone, keep, onto):
            await r.release()
        assert results_for(store).live_refs() == 0
        await results_for(store).close()
        store.close()

    asyncio.run(main())


class _AddFiles:
    """Writes fixed files on top of its input (or scratch without one); counts its runs."""

    def __init__(
        self, store: CacheStore, name: str, files: dict[str, str], runs: list[str], n_inputs: int
    ) -> None:
        self.store = store
        self.name = name
        self.files = files
        self.runs = runs
        self.n_inputs = n_inputs

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def worker(self) -> str:
        return "local"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        body = repr(sorted(self.files.items())).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return CacheMap(digest, tuple(Dep() for _ in range(self.n_inputs))), True

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        self.runs.append(self.name)
        parent = inputs[0] if inputs else None
        return [await _snap(self.store, dict(self.files), parent=parent)]


def _graph(store: CacheStore, runs: list[str], x_text: str) -> Vertex:
    engine = _engine(store)
    base = Vertex("sha256:base", _AddFiles(store, "base", {"b": "1"}, runs, 0), name="base")
    top = Vertex(
        "sha256:top",
        _AddFiles(store, "top", {"t": x_text}, runs, 1),
        inputs=((base, 0),),
        name="top",
    )
    diff = Vertex(
        "sha256:diff",
        DiffOpAdapter(_diff_op(0, 1, 2), "sha256:diff", engine, PLATFORM),
        inputs=((base, 0), (top, 0)),
        name="diff",
    )
    extra = Vertex("sha256:extra", _AddFiles(store, "extra", {"e": "e"}, runs, 0), name="extra")
    return Vertex(
        "sha256:merge",
        MergeOpAdapter(_merge_op([0, 1], 2), "sha256:merge", engine, PLATFORM),
        inputs=((extra, 0), (diff, 0)),
        name="merge",
    )


async def _solve(root: Path, x_text: str, runs: list[str]) -> tuple[str, dict[str, str]]:
    store = await asyncio.to_thread(CacheStore.open, root, COPY)
    results = results_for(store)
    async with Solver(store.keys, results) as solver:
        async with solver.job() as job:
            res = await solver.solve(_graph(store, runs, x_text), job)
        tree = await _tree(res)
        rid = res.id
        await res.release()
    assert results.live_refs() == 0
    await results.close()
    store.close()
    return rid, tree


def test_solver_caches_merge_and_diff_across_store_reopens(tmp_path: Path) -> None:
    runs: list[str] = []
    first, tree = asyncio.run(_solve(tmp_path, "x", runs))
    assert tree == {"e": "e", "t": "x"} and sorted(runs) == ["base", "extra", "top"]
    runs.clear()
    again, tree = asyncio.run(_solve(tmp_path, "x", runs))
    assert again == first and tree == {"e": "e", "t": "x"} and runs == []
    # A changed input re-runs that source and the merge/diff above it.
    changed, tree = asyncio.run(_solve(tmp_path, "y", runs))
    assert changed != first and tree == {"e": "e", "t": "y"} and runs == ["top"]
