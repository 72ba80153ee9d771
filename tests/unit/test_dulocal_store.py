"""Local source copies in the cache store: listed by ``du`` (kind ``source.local``), removed by
``prune`` only when no sync holds their lock, and the lock protocol shared with the source."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bkcore.cache import localcopies
from bkcore.cache.localcopies import CONTENT_DIR, INDEX, LOCAL_DIR, copy_dir_for, lock_copy
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import KIND_LOCAL, CacheStore, UsageRecord


async def _fill(base: Path, name: str, size: int) -> None:
    """Make a copy the way the local source does: under its lock, a tree and an index."""
    async with lock_copy(base, f"local source for {name}"):
        (base / "tree").mkdir(exist_ok=True)
        (base / "tree" / "data.bin").write_bytes(os.urandom(size))
        (base / INDEX).write_text("{}")


def _local(records: list[UsageRecord]) -> dict[str, UsageRecord]:
    return {r.id: r for r in records if r.kind == KIND_LOCAL}


def _age(base: Path, seconds: float) -> None:
    then = time.time() - seconds
    for f in (base / "lock", base / INDEX):
        os.utime(f, (then, then))


def test_copy_appears_in_du_with_its_size_description_and_last_use(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    base = copy_dir_for(store.root, "ctx", "", "project")
    assert base.parent == tmp_path / LOCAL_DIR
    before = time.time()
    asyncio.run(_fill(base, "ctx", 200_000))
    (rec,) = _local(store.du()).values()
    assert rec.id == "local-" + base.name
    assert rec.size >= 200_000 and not rec.in_use and rec.parent is None
    assert rec.description == "local source for ctx"
    assert before - 1 <= rec.last_used <= time.time() + 1
    _age(base, 3600)
    (rec,) = _local(store.du()).values()
    assert abs(rec.last_used - (time.time() - 3600)) < 5
    # the shared content map is not a copy
    (tmp_path / LOCAL_DIR / CONTENT_DIR).mkdir()
    assert len(_local(store.du())) == 1
    store.close()


def test_copy_is_in_use_while_its_lock_is_held(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    base = copy_dir_for(store.root, "ctx", "h", "k")

    async def main() -> None:
        async with lock_copy(base, "local source for ctx"):
            (rec,) = _local(store.du()).values()
            assert rec.in_use
        (rec,) = _local(store.du()).values()
        assert not rec.in_use

    asyncio.run(main())
    store.close()


def test_prune_removes_an_idle_copy_and_leaves_a_locked_one(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    idle = copy_dir_for(store.root, "idle", "", "p")
    busy = copy_dir_for(store.root, "busy", "", "p")

    async def main() -> None:
        await _fill(idle, "idle", 50_000)
        await _fill(busy, "busy", 30_000)
        idle_size = _local(store.du())["local-" + idle.name].size
        async with lock_copy(busy, "local source for busy"):
            freed = await asyncio.to_thread(store.prune)
            assert freed == idle_size
            assert not idle.exists()
            assert (busy / "tree" / "data.bin").stat().st_size == 30_000
        assert set(_local(store.du())) == {"local-" + busy.name}
        assert await asyncio.to_thread(store.prune) > 30_000
        assert not busy.exists() and _local(store.du()) == {}
        # no half-removed leftovers
        assert sorted(p.name for p in (tmp_path / LOCAL_DIR).iterdir()) == []

    asyncio.run(main())
    store.close()


def test_prune_leaves_a_copy_locked_by_another_process(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    base = copy_dir_for(store.root, "ctx", "", "p")
    asyncio.run(_fill(base, "ctx", 10_000))
    holder = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(base / "lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        assert _local(store.du())["local-" + base.name].in_use
        assert store.prune() == 0 and (base / "tree" / "data.bin").exists()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    assert not _local(store.du())["local-" + base.name].in_use
    assert store.prune() > 0 and not base.exists()
    store.close()


def test_prune_without_all_keeps_copies(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    base = copy_dir_for(store.root, "ctx", "", "p")
    asyncio.run(_fill(base, "ctx", 10_000))
    assert store.prune(all_unused=False) == 0 and base.exists()
    store.close()


def test_a_sync_waiting_while_prune_removes_the_copy_starts_a_fresh_one(tmp_path: Path) -> None:
    base = copy_dir_for(tmp_path, "ctx", "", "p")

    async def main() -> None:
        await _fill(base, "ctx", 1000)
        # Play the prune: hold the lock, then (while the sync waits) move the copy away.
        fd = os.open(base / "lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        entered = asyncio.Event()

        async def sync() -> None:
            async with lock_copy(base, "local source for ctx"):
                entered.set()
                (base / "tree").mkdir()
                (base / "tree" / "new").write_text("fresh")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(sync())
            await asyncio.sleep(0.2)
            assert not entered.is_set()  # really waiting for the lock
            os.rename(base, tmp_path / "gone")
            os.close(fd)
        assert (base / "tree" / "new").read_text() == "fresh"
        assert (base / "lock").read_text() == "local source for ctx"
        assert not (tmp_path / "gone" / "tree" / "new").exists()

    asyncio.run(main())


def test_lock_taken_on_a_copy_removed_in_between_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune renames the copy away between the sync's open and its flock: the sync must
    notice (the lock file at the path is another one) and lock a fresh copy."""
    base = copy_dir_for(tmp_path, "ctx", "", "p")
    real_flock = fcntl.flock
    calls: list[int] = []

    def racing_flock(fd: int, op: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            os.rename(base, tmp_path / "pruned")
        real_flock(fd, op)

    monkeypatch.setattr(
        localcopies,
        "fcntl",
        SimpleNamespace(
            flock=racing_flock,
            LOCK_EX=fcntl.LOCK_EX,
            LOCK_SH=fcntl.LOCK_SH,
            LOCK_NB=fcntl.LOCK_NB,
        ),
    )

    async def main() -> None:
        async with lock_copy(base, "local source for ctx"):
            (base / "tree").mkdir()

    asyncio.run(main())
    assert len(calls) == 2
    assert (base / "tree").is_dir() and (base / "lock").read_text() == "local source for ctx"
    assert not (tmp_path / "pruned" / "tree").exists()


def test_cancelled_wait_leaves_the_lock_free(tmp_path: Path) -> None:
    base = copy_dir_for(tmp_path, "ctx", "", "p")

    async def main() -> None:
        base.mkdir(parents=True)
        fd = os.open(base / "lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)

        async def waiter() -> None:
            async with lock_copy(base):
                raise AssertionError("must not get the lock")

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.15)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        os.close(fd)
        async with asyncio.timeout(5), lock_copy(base):
            pass

    asyncio.run(main())


def test_prune_forgets_content_map_entries_of_gone_snapshots(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    with store.snapshots.prepare(None, description="local source for ctx") as m:
        (m.mount() / "f").write_text("x")
        kept = m.commit()
    content = tmp_path / LOCAL_DIR / CONTENT_DIR
    content.mkdir(parents=True)
    (content / "live").write_text(kept)
    (content / "stale").write_text("0" * 32)
    (content / ".tmp-writing").write_text("")
    with store.leases.lease("build") as lease:
        lease.add("snapshot", kept)
        store.prune()
    assert sorted(p.name for p in content.iterdir()) == [".tmp-writing", "live"]
    store.close()


def test_open_finishes_a_crashed_removal(tmp_path: Path) -> None:
    CacheStore.open(tmp_path, COPY).close()
    trash = tmp_path / LOCAL_DIR / ".trash-0123-abc"
    (trash / "tree").mkdir(parents=True)
    (trash / "tree" / "f").write_text("x")
    store = CacheStore.open(tmp_path, COPY)
    assert not trash.exists() and _local(store.du()) == {}
    store.close()
