"""FileOps built with the SDK, loaded with build_graph and solved on a copy-driver store."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, cast

from bkcore import llb
from bkcore.cache.results import results_for
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.engine import Engine
from bkcore.ops.load import build_graph
from bkcore.solver.scheduler import Solver


def tree(store: CacheStore, sid: str) -> dict[str, str]:
    out: dict[str, str] = {}
    with store.snapshots.view(sid) as root:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                rel = os.path.relpath(os.path.join(dirpath, f), root)
                out[rel] = Path(dirpath, f).read_text()
    return out


def definition() -> llb.Definition:
    config = llb.scratch().file(
        llb.mkdir("/etc", 0o755)
        .mkfile("/etc/app.conf", 0o644, "port=80\n")
        .mkfile("/etc/other", 0o600, "x"),
        custom_name="make config",
    )
    app = llb.scratch().file(
        llb.mkdir("/srv", 0o755)
        .copy(config, "/etc/app.conf", "/srv/app.conf")
        .rm("/srv/app.conf.bak", allow_not_found=True),
        custom_name="assemble",
    )
    return app.marshal(platform="linux/amd64")


def test_sdk_file_graph_builds_and_is_cached_the_second_time(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path / "store", COPY)
    none = cast(Any, None)
    engine = Engine(store=store, worker=none, sessions=none, plugins=none)
    defn = definition().to_pb()

    async def solve() -> tuple[str, dict[str, str]]:
        head = build_graph(defn, engine)
        async with Solver(store.keys, results_for(store)) as solver:
            async with solver.job() as job:
                res = await solver.solve(head.vertex, job, head.output)
                sid = res.id
                await res.release()
        await results_for(store).close()
        return sid, tree(store, sid)

    first, files = asyncio.run(solve())
    assert files == {"srv/app.conf": "port=80\n"}
    assert store.snapshots.get(first).description == "assemble"
    # A second solver (new loop, new result store) finds the record: the same snapshot.
    second, again = asyncio.run(solve())
    assert second == first and again == files
