"""SnapshotResults: refcounted solver results over snapshots, protected by one lease."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bkcore.cache.results import (
    SnapshotResult,
    commit_result,
    mounts,
    new_result,
    prepare,
    results_for,
    view,
)
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.errors import CacheError
from bkcore.solver.types import Result, ResultStore


def _snap(store: CacheStore, name: str, parent: str | None = None) -> str:
    with store.snapshots.prepare(parent, description=name) as m:
        (m.mount() / name).write_text(name)
        return m.commit()


def _leased(store: CacheStore) -> set[str]:
    return store.leases.held("snapshot")


def _ids(store: CacheStore) -> set[str]:
    return {s.id for s in store.snapshots.all()}


def test_reference_keeps_snapshot_until_last_release(tmp_path: Path) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path, COPY)
        results = results_for(store)
        assert results_for(store) is results
        sid = _snap(store, "a")
        assert await results.load("missing") is None
        first = await results.load(sid)
        assert isinstance(first, SnapshotResult) and isinstance(first, Result)
        assert first.id == sid and results.refs(sid) == 1
        assert sid in _leased(store)
        second = first.clone()
        assert results.refs(sid) == 2
        await first.release()
        assert sid in _leased(store)
        assert store.prune() == 0 and sid in _ids(store)
        await second.release()
        assert results.refs(sid) == 0 and results.live_refs() == 0
        assert sid not in _leased(store)
        assert store.prune() > 0 and sid not in _ids(store)
        assert await results.load(sid) is None
        with pytest.raises(RuntimeError):
            await second.release()
        with pytest.raises(RuntimeError):
            second.clone()
        await results.close()
        assert results_for(store) is not results
        store.close()

    asyncio.run(main())


def test_store_protocol_and_new_result(tmp_path: Path) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path, COPY)
        rs: ResultStore = results_for(store)
        sid = _snap(store, "b")
        ref = await new_result(store, sid)
        loaded = await rs.load(sid)
        assert loaded is not None and loaded.id == sid
        assert results_for(store).refs(sid) == 2
        with pytest.raises(CacheError):
            await new_result(store, "nope")
        assert results_for(store).refs("nope") == 0
        await ref.release()
        await loaded.release()
        await results_for(store).close()
        store.close()

    asyncio.run(main())


def test_commit_prepare_view_and_mounts(tmp_path: Path) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path, COPY)
        results = results_for(store)
        m = await prepare(store, None, "base")
        (m.mount() / "f").write_text("one")
        base = await commit_result(store, m)
        assert store.snapshots.get(base.id).state == "committed"
        assert base.id in _leased(store)
        m2 = await prepare(store, base, "child")
        (m2.mount() / "g").write_text("two")
        child = await commit_result(store, m2)
        async with view(child) as root:
            assert (root / "f").read_text() == "one" and (root / "g").read_text() == "two"
        (mnt,) = mounts(child)
        assert mnt.type == "bind" and "ro" in mnt.options
        await base.release()
        # The child depends on its parent, so the parent stays; the child is leased.
        assert store.prune() == 0
        await child.release()
        assert store.prune() > 0 and _ids(store) == set()
        assert results.live_refs() == 0
        await results.close()
        store.close()

    asyncio.run(main())


def test_failed_commit_discards_and_drops_reference(tmp_path: Path) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path, COPY)
        m = await prepare(store, None, "doomed")
        m.discard()  # commit will now fail: the snapshot is gone
        with pytest.raises(CacheError):
            await commit_result(store, m)
        assert results_for(store).live_refs() == 0
        assert _ids(store) == set() and _leased(store) == set()
        await results_for(store).close()
        store.close()

    asyncio.run(main())


def test_release_then_load_keeps_lease_consistent(tmp_path: Path) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path, COPY)
        results = results_for(store)
        sids = [_snap(store, f"s{i}") for i in range(4)]

        async def churn(sid: str) -> None:
            for _ in range(20):
                ref = await results.load(sid)
                assert ref is not None
                other = ref.clone()
                await ref.release()
                await asyncio.sleep(0)
                await other.release()

        async with asyncio.TaskGroup() as tg:
            for sid in sids * 3:
                tg.create_task(churn(sid))
        assert results.live_refs() == 0
        assert _leased(store) == set()
        held = await results.load(sids[0])
        assert held is not None
        # A release racing a load of the same id must leave it leased.
        again = await results.load(sids[1])
        assert again is not None
        rel = asyncio.create_task(again.release())
        back = await results.load(sids[1])
        await rel
        assert back is not None and _leased(store) == {sids[0], sids[1]}
        await held.release()
        await back.release()
        assert _leased(store) == set()
        await results.close()
        store.close()

    asyncio.run(main())


def test_cancelled_load_leaves_no_reference(tmp_path: Path) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path, COPY)
        results = results_for(store)
        sid = _snap(store, "c")
        task = asyncio.create_task(results.load(sid))
        await asyncio.sleep(0)  # the lease add is queued on the worker thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert results.refs(sid) == 0
        ref = await results.load(sid)  # queued after the cancelled load's removal
        assert ref is not None and _leased(store) == {sid}
        await ref.release()
        assert _leased(store) == set()
        await results.close()
        store.close()

    asyncio.run(main())


def test_lease_protects_from_prune_in_another_process(tmp_path: Path) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path, COPY)
        sid = _snap(store, "d")
        ref = await new_result(store, sid)
        code = textwrap.dedent(
            f"""
            from pathlib import Path
            from bkcore.cache.store import CacheStore
            s = CacheStore.open(Path({str(tmp_path)!r}))
            print(s.prune())
            """
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
        assert out.stdout.strip() == b"0" and sid in _ids(store)
        await ref.release()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
        assert int(out.stdout) > 0 and sid not in _ids(store)
        await results_for(store).close()
        store.close()

    asyncio.run(main())


def test_close_drops_the_lease(tmp_path: Path) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path, COPY)
        results = results_for(store)
        sid = _snap(store, "e")
        ref = await results.load(sid)
        assert ref is not None and results.lease_id is not None
        await results.close()
        assert _leased(store) == set() and store.db.query("SELECT id FROM leases") == []
        with pytest.raises(CacheError):
            await results.load(sid)
        store.close()

    asyncio.run(main())
