"""ExecOpAdapter driven by the real solver over a real store: cache hits and content keys."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from bkcore.cache.results import commit_result, results_for
from bkcore.cache.store import CacheStore
from bkcore.engine import Engine
from bkcore.llb import pb
from bkcore.llb.digest import marshal, present
from bkcore.ops.exec import ExecOpAdapter
from bkcore.pluginmanager import BkPluginManager
from bkcore.progress import ProgressStream, VertexEvent
from bkcore.session import SessionManager
from bkcore.solver.scheduler import Solver
from bkcore.solver.types import CacheMap, OpContext, Result, Vertex
from bkcore.workers.runc import RuncWorker

BUSYBOX = "/bin/busybox"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc binary not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="runc containers and overlay mounts need root"),
]


def busybox_rootfs(path: Path) -> None:
    (path / "bin").mkdir()
    (path / "tmp").mkdir()
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (path / "bin" / applet).symlink_to("busybox")


class TreeOp:
    """A source-like op: a snapshot filled by ``fill``, keyed by ``key`` (a root key)."""

    def __init__(self, store: CacheStore, key: str, fill: Callable[[Path], None]) -> None:
        self.store = store
        self.key = key
        self.fill = fill
        self.runs = 0

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def worker(self) -> str:
        return "local"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        return CacheMap(digest="sha256:" + hashlib.sha256(self.key.encode()).hexdigest()), True

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        self.runs += 1
        mutable = await asyncio.to_thread(self.store.snapshots.prepare, None, self.key)
        root = await asyncio.to_thread(mutable.mount)
        await asyncio.to_thread(self.fill, root)
        return [await commit_result(self.store, mutable)]


def exec_adapter(engine: Engine, script: str, selector: str, tag: str) -> ExecOpAdapter:
    mounts = [
        pb.Mount(input=0, dest="/", output=0),
        pb.Mount(input=1, dest="/src", output=-1, readonly=True, selector=selector),
        pb.Mount(
            input=-1,
            dest="/runs",
            output=-1,
            mount_type=pb.MountType.CACHE,
            cache_opt=present(pb.CacheOpt(id="runs-" + tag)),
        ),
    ]
    exec_op = pb.ExecOp(meta=pb.Meta(args=["/bin/sh", "-c", script], cwd="/"), mounts=mounts)
    inputs = [pb.Input(digest="sha256:" + "1" * 64), pb.Input(digest="sha256:" + "2" * 64)]
    raw = marshal(pb.Op(inputs=inputs, exec=exec_op))
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    return ExecOpAdapter(pb.Op().parse(raw), digest, engine, None)


def test_second_solve_is_cached_and_content_keys_ignore_unselected_files(tmp_path: Path) -> None:
    script = "echo run >> /runs/log; cat /src/f > /copied"

    async def build(
        store: CacheStore, engine: Engine, data_key: str, inside: str, outside: str
    ) -> tuple[bytes, list[VertexEvent]]:
        base = TreeOp(store, "base", busybox_rootfs)

        def fill(d: Path) -> None:
            (d / "sel").mkdir()
            (d / "sel" / "f").write_text(inside)
            (d / "other").write_text(outside)

        data = TreeOp(store, data_key, fill)
        adapter = exec_adapter(engine, script, "sel", "t")
        v_base = Vertex("sha256:" + "1" * 64, base, name="base")
        v_data = Vertex("sha256:" + "2" * 64 + data_key, data, name="data")
        v_exec = Vertex(adapter.digest, adapter, ((v_base, 0), (v_data, 0)), name="exec")
        stream = ProgressStream()
        reader = stream.subscribe()
        async with Solver(store.keys, results_for(store)) as solver:
            async with solver.job(progress=stream, values={"session": ""}) as job:
                result = await solver.solve(v_exec, job)
                try:
                    with store.snapshots.view(result.id) as root:
                        copied = (root / "copied").read_bytes()
                finally:
                    await result.release()
        events = [e for e in reader.read_nowait() if isinstance(e, VertexEvent)]
        return copied, [e for e in events if e.name == "exec" and e.completed]

    def runs(store: CacheStore) -> int:
        (info,) = [m for m in store.cache_mounts.all() if m.id == "runs-t"]
        return len((info.path / "log").read_text().splitlines())

    async def main() -> None:
        store = await asyncio.to_thread(CacheStore.open, tmp_path / "store")
        worker = RuncWorker.for_root(tmp_path / "state", snapshotter=store.driver)
        sessions = SessionManager()
        engine = Engine(store, worker, sessions, BkPluginManager())
        try:
            copied, done = await build(store, engine, "d1", "A\n", "x")
            assert copied == b"A\n" and runs(store) == 1
            assert done[-1].cached is False
            # same definition: cached
            copied, done = await build(store, engine, "d1", "A\n", "x")
            assert copied == b"A\n" and runs(store) == 1
            assert done[-1].cached is True
            # a new data definition, but the selected path has the same content: cached
            copied, done = await build(store, engine, "d2", "A\n", "changed outside")
            assert copied == b"A\n" and runs(store) == 1
            assert done[-1].cached is True
            # the selected content changes: runs again
            copied, done = await build(store, engine, "d3", "B\n", "x")
            assert copied == b"B\n" and runs(store) == 2
            assert done[-1].cached is False
        finally:
            await results_for(store).close()
            await sessions.close()
            store.close()

    asyncio.run(main())


def test_content_key_of_a_missing_selected_path_fails_with_the_vertex(tmp_path: Path) -> None:
    from bkcore.errors import SolveError

    async def main() -> None:
        store = await asyncio.to_thread(CacheStore.open, tmp_path / "store")
        worker = RuncWorker.for_root(tmp_path / "state", snapshotter=store.driver)
        sessions = SessionManager()
        engine = Engine(store, worker, sessions, BkPluginManager())
        try:
            base = TreeOp(store, "base", busybox_rootfs)
            data = TreeOp(store, "data", lambda d: (d / "other").write_text("x"))
            adapter = exec_adapter(engine, "true", "missing", "m")
            v_base = Vertex("sha256:" + "1" * 64, base, name="base")
            v_data = Vertex("sha256:" + "2" * 64, data, name="data")
            v_exec = Vertex(adapter.digest, adapter, ((v_base, 0), (v_data, 0)), name="exec")
            async with Solver(store.keys, results_for(store)) as solver:
                async with solver.job() as job:
                    with pytest.raises(SolveError, match="failed to compute cache key") as info:
                        await solver.solve(v_exec, job)
            assert info.value.digest == adapter.digest
        finally:
            await results_for(store).close()
            await sessions.close()
            store.close()

    asyncio.run(main())
