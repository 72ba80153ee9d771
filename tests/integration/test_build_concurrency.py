"""Concurrency of real builds, shown by overlap markers, never by timing.

Each step that must overlap with another creates its own marker file in a shared cache mount
and then waits for the other's: if the two steps ran one after the other, the first would
wait in vain and fail (exit 7) after a bounded wait. Dedup is shown by a step that can only
finish while the second build is in flight, and counts its runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb

pytestmark = pytest.mark.integration

#: Upper bound of one marker wait inside a container (busybox usleep 20 ms x 3000 = 60 s+).
WAIT_LOOPS = 3000


def rendezvous(me: str, *others: str) -> str:
    """Shell: create /sync/<me>, then wait until every /sync/<other> exists (else exit 7)."""
    waits = " && ".join(f"[ -e /sync/{o} ]" for o in others)
    return (
        f"touch /sync/{me}; i=0; until {waits}; do usleep 20000; i=$((i+1));"
        f" [ $i -gt {WAIT_LOOPS} ] && echo gave up waiting >&2 && exit 7; done; echo {me} done"
    )


def sync_mount(cache_id: str) -> Any:
    return llb.cache("/sync", cache_id, sharing=llb.CacheSharing.SHARED)


def test_independent_steps_run_at_the_same_time(bk: Any, tmp_path: Path) -> None:
    base = bk.base()
    left = base.sh(
        rendezvous("left", "right") + " > /left.txt",
        mounts=[sync_mount("overlap")],
        custom_name="left",
    ).root()
    right = base.sh(
        rendezvous("right", "left") + " > /right.txt",
        mounts=[sync_mount("overlap")],
        custom_name="right",
    ).root()
    graph = llb.scratch().file(
        llb.copy(left, "/left.txt", "/left.txt").copy(right, "/right.txt", "/right.txt"),
        custom_name="join",
    )
    out = tmp_path / "out"
    run = bk.build(graph, out=out)
    assert (out / "left.txt").read_text() == "left done\n"
    assert (out / "right.txt").read_text() == "right done\n"
    assert run.started("left") == 1 and run.started("right") == 1


def test_two_processes_build_on_one_root_at_the_same_time(bk: Any, tmp_path: Path) -> None:
    """Two ``bkcore build`` processes share a state root; their steps overlap."""

    def graph(me: str, other: str) -> Any:
        step = bk.base().sh(
            rendezvous(me, other) + f" > /{me}.txt",
            mounts=[sync_mount("two-processes")],
            custom_name=f"step {me}",
        )
        return llb.scratch().file(llb.copy(step.root(), f"/{me}.txt", f"/{me}.txt"))

    first = bk.start(graph("one", "two"), out=tmp_path / "out1")
    second = bk.start(graph("two", "one"), out=tmp_path / "out2")
    for proc in (first, second):
        bk.finish(proc).check()
    assert (tmp_path / "out1" / "one.txt").read_text() == "one done\n"
    assert (tmp_path / "out2" / "two.txt").read_text() == "two done\n"
    # Both processes committed into the same store: a third build finds both steps cached.
    run = bk.build(llb.merge([graph("one", "two"), graph("two", "one")]), out=tmp_path / "out3")
    assert run.cached()["step one"] and run.cached()["step two"]


# embedded only: it drives the embedded Controller API in this process (no CLI, no daemon);
# test_d6load_clients covers a shared vertex across daemon clients
@pytest.mark.embedded_only("drives bkcore.controller.Controller in the test process")
def test_concurrent_builds_in_one_process_share_a_vertex(bk: Any, tmp_path: Path) -> None:
    """Two builds in one controller: their common step runs once, seen by both.

    The shared step finishes only once both builds' own steps have run, so it is still
    running when the second build reaches it; a second copy of it would be a second run
    (and with two runc slots, two waiting copies would starve the own steps).
    """
    from bkcore.controller import BuildOptions, Controller, OutputSpec
    from bkcore.pluginmanager import get_plugin_manager
    from bkcore.progress import ProgressStream, VertexEvent

    base = bk.base()
    shared = base.sh(
        "echo run >> /sync/shared-runs; "
        + rendezvous("shared", "own-a", "own-b")
        + "; cp /sync/shared-runs /shared-runs.txt",
        mounts=[sync_mount("dedup")],
        custom_name="shared step",
    ).root()

    def graph(name: str) -> bytes:
        own = base.sh(
            f"touch /sync/own-{name}; echo {name} > /own.txt",
            mounts=[sync_mount("dedup")],
            custom_name=f"own step {name}",
        ).root()
        head = llb.scratch().file(
            llb.copy(shared, "/shared-runs.txt", "/shared-runs.txt").copy(
                own, "/own.txt", "/own.txt"
            ),
            custom_name=f"collect {name}",
        )
        return bytes(bk.definition(head))

    async def main() -> list[list[VertexEvent]]:
        plugins = get_plugin_manager()
        streams = [ProgressStream(), ProgressStream()]
        readers = [s.subscribe() for s in streams]
        async with Controller(plugins, bk.root) as controller:
            async with asyncio.TaskGroup() as tg:
                for name, stream in zip("ab", streams, strict=True):
                    options = BuildOptions(
                        graph(name),
                        locals={"rootfs": str(bk.rootfs_dir)},
                        outputs=(OutputSpec("local", {"dest": str(tmp_path / f"out-{name}")}),),
                    )
                    tg.create_task(controller.build(options, progress=stream))
        return [[e for e in r.read_nowait() if isinstance(e, VertexEvent)] for r in readers]

    seen = asyncio.run(asyncio.wait_for(main(), 300))
    for name in "ab":
        out = tmp_path / f"out-{name}"
        assert (out / "shared-runs.txt").read_text() == "run\n"  # one run of the shared step
        assert (out / "own.txt").read_text() == f"{name}\n"
    for events in seen:
        final = [e for e in events if e.name == "shared step"][-1]
        assert final.completed is not None and not final.error and not final.cached
