"""du's UsageCount as buildkitd keeps it: each use of a record (viewed, the base of a new
snapshot, a cache mount acquired) counts once, bumped with ``last_used`` and persisted with the
record; ``du -v`` prints it and the daemon's DiskUsage carries it."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

from bkcore.api.server import usage_record
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.cli.daemon_cmd import to_record
from bkcore.cli.du_cmd import collect, render_blocks


def _snap(store: CacheStore, parent: str | None, name: str) -> str:
    with store.snapshots.prepare(parent, description=name) as m:
        (m.mount() / name).write_text(name)
        return m.commit()


async def _use_cache(store: CacheStore, times: int) -> None:
    for _ in range(times):
        async with store.cache_mounts.acquire("apt"):
            pass


def test_uses_are_counted_and_kept_across_reopening(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    try:
        base = _snap(store, None, "base")
        assert store.snapshots.get(base).usage_count == 0  # made, not used yet
        child = _snap(store, base, "child")  # base is used as the child's parent
        with store.snapshots.view(base):
            pass
        with store.snapshots.view(child):
            pass
        asyncio.run(_use_cache(store, 3))
    finally:
        store.close()
    store = CacheStore.open(tmp_path, COPY)
    try:
        counts = {r.description: r.usage_count for r in collect(store)}
        text = render_blocks(collect(store))
    finally:
        store.close()
    assert counts["base"] == 2 and counts["child"] == 1
    assert counts["cache mount apt"] == 3
    assert re.search(r"^Description: +base\nUsage count: +2\n", text, re.M)


def test_daemon_disk_usage_carries_the_count(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    try:
        base = _snap(store, None, "base")
        for _ in range(4):
            with store.snapshots.view(base):
                pass
        (record,) = [r for r in collect(store) if r.id == base]
    finally:
        store.close()
    wire = usage_record(record)
    assert wire.usage_count == 4
    assert to_record(wire).usage_count == 4  # what `bkcore --addr ... du -v` prints


def test_a_database_from_before_the_column_gets_it(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    try:
        base = _snap(store, None, "base")
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / "metadata.db")
    db.execute("ALTER TABLE snapshots DROP COLUMN usage_count")
    db.execute("ALTER TABLE cache_mounts DROP COLUMN usage_count")
    db.commit()
    db.close()
    store = CacheStore.open(tmp_path, COPY)
    try:
        assert store.snapshots.get(base).usage_count == 0
        with store.snapshots.view(base):
            pass
        assert store.snapshots.get(base).usage_count == 1
        asyncio.run(_use_cache(store, 1))
        assert [m.usage_count for m in store.cache_mounts.all()] == [1]
    finally:
        store.close()


def test_local_source_copies_count_each_sync(tmp_path: Path) -> None:
    from bkcore.cache.localcopies import copy_dir_for, lock_copy

    base = copy_dir_for(tmp_path, "context", "", "key")

    async def syncs(n: int) -> None:
        for _ in range(n):
            async with lock_copy(base, "local source for context"):
                (base / "tree").mkdir(exist_ok=True)

    asyncio.run(syncs(4))
    store = CacheStore.open(tmp_path, COPY)
    try:
        (record,) = [r for r in collect(store) if r.type == "source.local"]
    finally:
        store.close()
    assert record.usage_count == 4 and record.description == "local source for context"


def test_an_image_export_counts_one_use_of_the_result(tmp_path: Path) -> None:
    from bkcore.cache.results import new_result
    from bkcore.plugins.exporters.imagecommon import build_image, parse_options
    from bkcore.progress import ProgressStream

    class Ctx:
        metadata: dict[str, bytes] = {}
        refs: dict[str, object] = {}
        progress = ProgressStream()
        caller = None

    store = CacheStore.open(tmp_path, COPY)
    try:
        top = _snap(store, None, "top")

        async def export() -> None:
            result = await new_result(store, top)
            try:
                opts = parse_options({}, {}, oci_default=False, environ={})
                await build_image(Ctx(), result, opts)  # type: ignore[arg-type]
            finally:
                await result.release()

        asyncio.run(export())
        assert store.snapshots.get(top).usage_count == 1
    finally:
        store.close()
