"""diff keeps the layers of upper above lower, with their descriptions, as BuildKit v0.11's
cache manager (tests/bkdiff: merge-base-and-exec, exec-rootfs-changes history)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from bkcore.cache.results import SnapshotResult, commit_result, prepare
from bkcore.cache.snapshots import COPY, OVERLAY, detect_driver
from bkcore.cache.store import CacheStore
from bkcore.engine import Engine
from bkcore.layers.chain import layer_groups
from bkcore.llb import pb
from bkcore.llb.platforms import Platform
from bkcore.ops.mergediff import DiffOpAdapter, MergeOpAdapter
from bkcore.solver.types import OpContext, Result, Vertex

PLATFORM = Platform("linux", "amd64", "")


def _drivers() -> list[str]:
    probe = Path("/tmp") / f"bk-bkdiff-probe-{id(object())}"
    probe.mkdir(exist_ok=True)
    try:
        return [COPY, OVERLAY] if detect_driver(probe) == OVERLAY else [COPY]
    finally:
        probe.rmdir()


DRIVERS = _drivers()


def _ctx(name: str) -> OpContext:
    vertex = Vertex(digest="sha256:" + name, op=cast(Any, None), name=name)
    return OpContext(vertex=vertex, progress=cast(Any, None), jobs=lambda: [])


def _op(kind: str, order: list[int]) -> pb.Op:
    inputs = [pb.Input(digest=f"sha256:{i}", index=0) for i in range(len(order))]
    if kind == "merge":
        return pb.Op(inputs=inputs, merge=pb.MergeOp(inputs=[pb.MergeInput(i) for i in order]))
    low, up = pb.LowerDiffInput(input=order[0]), pb.UpperDiffInput(input=order[1])
    low._serialized_on_wire = up._serialized_on_wire = True
    return pb.Op(inputs=inputs, diff=pb.DiffOp(lower=low, upper=up))


async def _snap(
    store: CacheStore, files: dict[str, str], desc: str, parent: Result | None = None
) -> SnapshotResult:
    m = await prepare(store, parent, desc)
    for name, text in files.items():
        (m.mount() / name).write_text(text)
    return await commit_result(store, m)


def test_diff_over_stacked_layers_keeps_each_layer(tmp_path: Path) -> None:
    async def main() -> list[str]:
        store = CacheStore.open(tmp_path, COPY)
        engine = Engine(
            store=store, worker=cast(Any, None), sessions=cast(Any, None), plugins=cast(Any, None)
        )
        base = await _snap(store, {"b": "b"}, "base")
        run = await _snap(store, {"r": "r"}, "mount / from exec run", parent=base)
        top = await _snap(store, {"t": "t"}, "top")
        diff = DiffOpAdapter(_op("diff", [0, 1]), "sha256:d", engine, PLATFORM)
        # one layer above lower: that layer, under its own description (not "diff one")
        (one,) = await diff.exec(_ctx("diff one"), [base, run])
        merge = MergeOpAdapter(_op("merge", [0, 1, 2]), "sha256:m", engine, PLATFORM)
        (merged,) = await merge.exec(_ctx("merge"), [base, one, top])
        (changes,) = await diff.exec(_ctx("diff"), [base, merged])
        groups = layer_groups(store.snapshots, changes.id)
        return [store.snapshots.get(one.id).description] + [g[-1].description for g in groups]

    got = asyncio.run(main())
    # two layers above base stay two layers, each with its own description
    assert got == ["mount / from exec run", "mount / from exec run", "top"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_diff_of_a_snapshot_against_itself_has_no_layers(tmp_path: Path, driver: str) -> None:
    """BuildKit returns a nil ref (no layers at all), not an empty layer."""

    async def main() -> tuple[int, list[str]]:
        store = CacheStore.open(tmp_path, driver)
        engine = Engine(
            store=store, worker=cast(Any, None), sessions=cast(Any, None), plugins=cast(Any, None)
        )
        base = await _snap(store, {"b": "b"}, "base")
        diff = DiffOpAdapter(_op("diff", [0, 1]), "sha256:d", engine, PLATFORM)
        (same,) = await diff.exec(_ctx("diff same"), [base, base])
        with store.snapshots.view(same.id) as root:
            names = sorted(p.name for p in root.iterdir())
        return len(layer_groups(store.snapshots, same.id)), names

    assert asyncio.run(main()) == (0, [])
