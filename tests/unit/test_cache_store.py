"""CacheStore: leases, du, prune, crash recovery, persistence across processes (copy driver)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bkcore.cache.snapshots import COPY
from bkcore.cache.store import KIND_BLOB, KIND_CACHE_MOUNT, KIND_SNAPSHOT, CacheStore
from bkcore.errors import CacheError
from bkcore.solver.keystorage import LinkLabel


def _snap(store: CacheStore, parent: str | None, name: str, size: int) -> str:
    with store.snapshots.prepare(parent, description=name) as m:
        (m.mount() / name).write_bytes(os.urandom(size))
        return m.commit()


def _run(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_lease_protects_from_prune_and_du_reports(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    s1 = _snap(store, None, "one", 64 * 1024)
    s2 = _snap(store, s1, "two", 128 * 1024)
    s3 = _snap(store, None, "three", 32 * 1024)
    blob = store.content.ingest(io.BytesIO(b"x" * 5000))
    store.keys.add_result("key-two", s2, 1.0)
    store.keys.add_result("key-three", s3, 1.0)
    store.keys.add_link("key-root", LinkLabel(0, 0, "d", ""), "key-three")
    with store.leases.lease("build-1") as lease:
        lease.add("snapshot", s2)
        lease.add("blob", blob)
        with pytest.raises(CacheError):
            lease.add("snapshot", "missing")
        with pytest.raises(CacheError):
            store.leases.create("build-1")  # held by a live process (us)
        du = {r.id: r for r in store.du()}
        assert {du[s].kind for s in (s1, s2, s3)} == {KIND_SNAPSHOT}
        assert du[blob].kind == KIND_BLOB and du[blob].size == 5000 and du[blob].in_use
        assert du[s2].in_use and not du[s1].in_use and not du[s3].in_use
        assert du[s2].parent == s1 and du[s2].description == "two"
        # Copy driver: s2 holds a full copy (one + two), so it is larger than one alone.
        assert du[s1].size >= 64 * 1024
        assert du[s2].size >= (64 + 128) * 1024
        assert du[s3].size >= 32 * 1024
        freed = store.prune()
        assert freed == du[s3].size
        assert {s.id for s in store.snapshots.all()} == {s1, s2}
        assert store.content.has(blob)
        assert store.keys.results("key-three") == []
        assert not store.keys.exists("key-root")  # its only link led to a pruned result
        assert [r.result_id for r in store.keys.results("key-two")] == [s2]
    freed = store.prune()
    assert freed == du[s1].size + du[s2].size + 5000
    assert store.du() == []
    assert store.keys.results("key-two") == []
    assert sorted(os.listdir(tmp_path / "snapshots")) == []
    store.close()


def test_prune_keeps_cached_results_unless_all(tmp_path: Path) -> None:
    with CacheStore.open(tmp_path, COPY) as store:
        s1 = _snap(store, None, "cached", 1000)
        s2 = _snap(store, None, "orphan", 1000)
        store.keys.add_result("k", s1, 1.0)
        store.prune(all_unused=False)
        assert [s.id for s in store.snapshots.all()] == [s1]
        assert s2 not in {r.id for r in store.du()}
        store.prune(all_unused=True)
        assert store.snapshots.all() == []


def test_keystore_and_snapshots_persist_across_processes(tmp_path: Path) -> None:
    child = _run(
        f"""
        from pathlib import Path
        from bkcore.cache.store import CacheStore
        from bkcore.solver.keystorage import LinkLabel
        store = CacheStore.open(Path({str(tmp_path)!r}), "copy")
        with store.snapshots.prepare(None) as m:
            (m.mount() / "f").write_text("from child")
            sid = m.commit()
        store.keys.add_link("root", LinkLabel(0, 0, "op", "/s"), "k1")
        store.keys.add_result("k1", sid, 5.0)
        store.close()
        print(sid)
        """
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    sid = out.decode().strip()
    with CacheStore.open(tmp_path, COPY) as store:
        assert store.keys.walk_links("root", LinkLabel(0, 0, "op", "/s")) == ["k1"]
        (rec,) = store.keys.results("k1")
        assert rec.result_id == sid
        with store.snapshots.view(rec.result_id) as v:
            assert (v / "f").read_text() == "from child"


def test_crash_mid_prepare_is_recovered(tmp_path: Path) -> None:
    with CacheStore.open(tmp_path, COPY) as store:
        base = _snap(store, None, "base", 4096)
    child = _run(
        f"""
        import io, sys, time
        from pathlib import Path
        from bkcore.cache.store import CacheStore
        store = CacheStore.open(Path({str(tmp_path)!r}), "copy")
        store.leases.create("dying-lease").add("snapshot", {base!r})
        m = store.snapshots.prepare({base!r})
        (m.mount() / "half").write_text("partial")
        print(m.id, m.num, flush=True)
        time.sleep(60)
        """
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode().split()
        active_id, active_num = line[0], line[1]
        # The child is mid-way: its active snapshot exists on disk.
        assert (tmp_path / "snapshots" / active_num / "fs" / "half").exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (tmp_path / "ingest" / f"{child.pid}-1-deadbeef").write_bytes(b"partial blob")
    with CacheStore.open(tmp_path, COPY) as store:
        ids = {s.id for s in store.snapshots.all()}
        assert ids == {base}
        assert active_id not in ids
        assert not (tmp_path / "snapshots" / active_num).exists()
        assert os.listdir(tmp_path / "ingest") == []
        assert store.db.query("SELECT id FROM leases") == []
        assert {r.id for r in store.du() if r.in_use} == set()
        assert store.prune() > 0


def test_open_waits_for_recovery_lock(tmp_path: Path) -> None:
    import fcntl

    CacheStore.open(tmp_path, COPY).close()
    marker = tmp_path / "released"
    fd = os.open(tmp_path / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    child = _run(
        f"""
        from pathlib import Path
        from bkcore.cache.store import CacheStore
        print("before", flush=True)
        CacheStore.open(Path({str(tmp_path)!r}), "copy").close()
        print(Path({str(marker)!r}).exists())
        """
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"before"
    time.sleep(1.0)
    marker.write_text("released")  # only written while the child should still be waiting
    os.close(fd)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    assert out.strip() == b"True"


def test_cache_mount_in_du_and_prune(tmp_path: Path) -> None:
    import asyncio

    async def fill() -> None:
        async with store.cache_mounts.acquire("go-mod", "shared") as d:
            (d / "pkg").write_bytes(b"p" * 10000)

    with CacheStore.open(tmp_path, COPY) as store:
        asyncio.run(fill())
        (rec,) = store.du()
        assert rec.kind == KIND_CACHE_MOUNT and rec.size >= 10000 and not rec.in_use
        assert "go-mod" in rec.description
        assert store.prune(all_unused=False) == 0
        assert store.prune() >= 10000
        assert store.du() == []


def test_driver_is_fixed_once_snapshots_exist(tmp_path: Path) -> None:
    with CacheStore.open(tmp_path, COPY) as store:
        _snap(store, None, "x", 10)
    with pytest.raises(CacheError, match="holds copy snapshots"):
        CacheStore.open(tmp_path, "overlayfs")
    with CacheStore.open(tmp_path) as store:  # no choice given: the stored driver is used
        assert store.driver == COPY
