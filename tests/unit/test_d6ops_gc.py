"""GC by policies on a real store (vector v1 makes one snapshot, no container runtime):
filters, keepBytes, records a running build holds, and the daemon's pass scheduling."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bkcore.cache.gc import GarbageCollector, GCPolicy, apply_policies, match_filters
from bkcore.cli.du_cmd import collect, open_store
from bkcore.controller import BuildOptions, Controller
from bkcore.llb.dump import load_definition
from bkcore.pluginmanager import get_plugin_manager

V1 = Path(__file__).resolve().parents[1] / "data" / "vectors" / "v1_scratch_mkfile.llb"
SMALL = GCPolicy(keep_bytes=1, filters=("type==regular",))


def _regular(root: Path) -> list[str]:
    store = open_store(root)
    assert store is not None
    try:
        return [r.id for r in collect(store) if r.type == "regular"]
    finally:
        store.close()


def _build(root: Path) -> None:
    async def main() -> None:
        async with Controller(get_plugin_manager(), root) as c:
            await c.build(BuildOptions(V1.read_bytes()))

    asyncio.run(main())


def test_policies_apply_in_order_with_filters_and_bounds(tmp_path: Path) -> None:
    assert apply_policies(tmp_path, (SMALL,)) == []  # no store yet: nothing to do
    _build(tmp_path)
    (snap,) = _regular(tmp_path)
    # within the bound, or filtered out, or used recently: nothing goes
    assert apply_policies(tmp_path, (GCPolicy(keep_bytes=10**12),)) == []
    assert apply_policies(tmp_path, (GCPolicy(keep_bytes=1, filters=("type==blob",)),)) == []
    assert apply_policies(tmp_path, (GCPolicy(keep_duration=3600.0),)) == []
    assert _regular(tmp_path) == [snap]
    removed = apply_policies(tmp_path, (GCPolicy(keep_bytes=10**12), SMALL))
    assert [r.id for r in removed] == [snap]
    assert _regular(tmp_path) == []


def test_a_running_build_keeps_what_it_holds(tmp_path: Path) -> None:
    _build(tmp_path)  # a reclaimable snapshot from an earlier build

    async def main() -> tuple[list[str], list[str], list[str]]:
        async with Controller(get_plugin_manager(), tmp_path) as c:
            async with c.build_job(BuildOptions(no_cache=True)) as build:
                result = await build.bridge().solve(load_definition(V1.read_bytes(), "v1"))
                assert result.ref is not None
                held = result.ref.id
                removed = await asyncio.to_thread(apply_policies, tmp_path, (SMALL,))
                during = _regular(tmp_path)
            after = await asyncio.to_thread(apply_policies, tmp_path, (SMALL,))
            return [held], [r.id for r in removed], during + ["|"] + [r.id for r in after]

    held, removed, rest = asyncio.run(main())
    during, after = rest[: rest.index("|")], rest[rest.index("|") + 1 :]
    assert held[0] not in removed and len(removed) == 1  # only the earlier build's record
    assert held[0] in during
    assert held == after  # collected once the build released it


def test_collector_runs_at_start_up_and_after_requests(tmp_path: Path) -> None:
    passes: list[int] = []

    async def main() -> int:
        collector = GarbageCollector(
            tmp_path, (SMALL,), delay=0, throttle=0, on_pass=lambda r: passes.append(len(r))
        )
        task = asyncio.create_task(collector.run())
        while collector.passes < 1:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(_build, tmp_path)
        collector.request()
        while collector.passes < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return collector.passes

    assert asyncio.run(main()) == 2
    assert passes == [0, 1]
    assert _regular(tmp_path) == []


def test_collector_interval_runs_passes_without_builds(tmp_path: Path) -> None:
    async def main() -> int:
        collector = GarbageCollector(tmp_path, (SMALL,), delay=0, throttle=0, interval=0.01)
        task = asyncio.create_task(collector.run())
        while collector.passes < 3:  # start-up, then two by the interval alone
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return collector.passes

    assert asyncio.run(asyncio.wait_for(main(), 30)) >= 3


def test_collector_without_policies_does_nothing(tmp_path: Path) -> None:
    collector = GarbageCollector(tmp_path, (), delay=0)
    asyncio.run(asyncio.wait_for(collector.run(), 5))
    assert collector.passes == 0


def test_filters() -> None:
    fields = {"id": "a", "type": "regular", "inuse": "false"}
    assert match_filters([], fields)
    assert match_filters(["type==blob", "id==a"], fields)
    assert not match_filters(["type==regular,inuse==true"], fields)
    assert match_filters(["id~=^a$"], fields) and not match_filters(["parent"], fields)
