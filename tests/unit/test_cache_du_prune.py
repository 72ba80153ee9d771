"""``bkcore du`` and ``bkcore prune``: records, reclaimability, keep policies, output."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bkcore import config
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.cli import du_cmd, prune_cmd
from bkcore.cli.du_cmd import Record, collect, human_duration, human_size, render
from bkcore.cli.main import run
from bkcore.cli.prune_cmd import parse_duration, plan_keep, prune


@pytest.fixture(autouse=True)
def _reset_root() -> Iterator[None]:
    yield
    config.set_root(None)


def _snap(store: CacheStore, parent: str | None, name: str, size: int) -> str:
    with store.snapshots.prepare(parent, description=name) as m:
        (m.mount() / name).write_bytes(os.urandom(size))
        return m.commit()


def _age(store: CacheStore, sid: str, seconds: float) -> None:
    with store.db.tx() as c:
        c.execute("UPDATE snapshots SET last_used=? WHERE id=?", (time.time() - seconds, sid))


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert run(list(argv)) == 0
    return capsys.readouterr().out


def test_human_units() -> None:
    assert human_size(0) == "0B" and human_size(999) == "999B"
    assert human_size(4096) == "4.10kB" and human_size(113_090_000) == "113.09MB"
    assert human_size(2_500_000_000) == "2.50GB"
    assert human_duration(0.2) == "less than a second"
    assert human_duration(1) == "1 second" and human_duration(59) == "59 seconds"
    assert human_duration(125) == "2 minutes" and human_duration(7200) == "2 hours"
    assert human_duration(3 * 86400) == "3 days" and human_duration(21 * 86400) == "3 weeks"
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration("7d") == 7 * 86400 and parse_duration("0") == 0
    assert parse_duration("1.5h") == 5400 and parse_duration("250ms") == 0.25
    with pytest.raises(prune_cmd.UsageError):
        parse_duration("10 minutes")


def test_collect_marks_used_parents_and_mutable_snapshots(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    base = _snap(store, None, "base", 50_000)
    child = _snap(store, base, "child", 10_000)
    loose = _snap(store, None, "loose", 20_000)
    blob = store.content.ingest(io.BytesIO(b"b" * 3000))
    writing = store.snapshots.prepare(None, description="writing")
    with store.leases.lease("build") as lease:
        lease.add("snapshot", child)
        recs = {r.id: r for r in collect(store)}
        assert recs[child].in_use and not recs[child].reclaimable
        # The parent is not in use itself but cannot go while its child is held.
        assert not recs[base].in_use and not recs[base].reclaimable
        assert recs[loose].reclaimable and recs[blob].reclaimable
        assert recs[blob].type == "blob" and recs[blob].size == 3000
        assert recs[writing.id].mutable and not recs[writing.id].reclaimable
        assert recs[child].parent == base and recs[child].description == "child"
        assert recs[child].created_at is not None
        order = [r.size for r in collect(store)]
        assert order == sorted(order, reverse=True)
        text = render(list(recs.values()), verbose=False)
        lines = text.splitlines()
        assert lines[0].split() == ["ID", "RECLAIMABLE", "SIZE", "LAST", "ACCESSED"]
        assert any(line.startswith(writing.id + "*") for line in lines)
        reclaimable = recs[loose].size + recs[blob].size
        total = sum(r.size for r in recs.values())
        assert f"Reclaimable: {human_size(reclaimable)}" in lines
        assert f"Total:       {human_size(total)}" in lines
        verbose = render([recs[child]], verbose=True)
        assert f"Parent:      {base}" in verbose and "Type:        regular" in verbose
        assert "Reclaimable: false" in verbose and "Description: child" in verbose
    writing.discard()
    store.close()


def test_du_command_text_json_and_missing_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none"
    out = _cli(capsys, "--root", str(missing), "du")
    assert out.splitlines()[-1] == "Total:       0B" and not missing.exists()
    root = tmp_path / "store"
    store = CacheStore.open(root, COPY)
    sid = _snap(store, None, "one", 40_000)
    store.close()
    records = json.loads(_cli(capsys, "--root", str(root), "du", "--format", "json"))
    assert [r["id"] for r in records] == [sid]
    assert records[0]["reclaimable"] is True and records[0]["size"] >= 40_000
    text = _cli(capsys, "du", "--root", str(root), "-v")
    assert f"ID:          {sid}" in text and "Description: one" in text


def test_plan_keep_by_duration_and_storage() -> None:
    now = 10_000.0

    def rec(rid: str, size: int, age: float, reclaimable: bool = True) -> Record:
        return Record(
            rid, "regular", size, not reclaimable, reclaimable, False, now - age, None, "", None
        )

    recs = [
        rec("old", 500, 5000),
        rec("mid", 300, 500),
        rec("new", 200, 10),
        rec("used", 100, 9000, False),
    ]
    assert plan_keep(recs, keep_duration=600, keep_bytes=0, now=now) == {"mid", "new"}
    # 1100 bytes in all; to fit 550, "old" (500) goes first, then "mid" (300): 300 left.
    assert plan_keep(recs, keep_duration=0, keep_bytes=550, now=now) == {"new"}
    assert plan_keep(recs, keep_duration=0, keep_bytes=700, now=now) == {"mid", "new"}
    assert plan_keep(recs, keep_duration=0, keep_bytes=0, now=now) == set()
    # Kept by duration even when the size budget would drop it.
    assert plan_keep(recs, keep_duration=600, keep_bytes=1, now=now) == {"mid", "new"}


def test_prune_keeps_leased_recent_and_in_use_records(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path, COPY)
    old = _snap(store, None, "old", 30_000)
    recent = _snap(store, None, "recent", 20_000)
    held = _snap(store, None, "held", 10_000)
    for sid in (old, held):
        _age(store, sid, 7200)
    _age(store, recent, 60)
    blob = store.content.ingest(io.BytesIO(b"z" * 1000))

    async def fill_cache_mount() -> None:
        async with store.cache_mounts.acquire("pip") as d:
            (d / "wheel").write_bytes(b"w" * 5000)

    asyncio.run(fill_cache_mount())
    with store.leases.lease("other-build") as lease:
        lease.add("snapshot", held)
        report = prune(store, keep_duration=3600)
        removed = {r.id for r in report.removed}
        # The blob and the cache mount were used just now: kept by the duration too.
        assert removed == {old}
        assert report.freed == report.removed[0].size > 0
        left = {s.id for s in store.snapshots.all()}
        assert left == {recent, held}
        assert store.leases.held("snapshot") == {held}  # the keep lease is gone again
        report = prune(store)
        assert {r.id for r in report.removed} == {recent, blob, "cachemount-1"}
        assert report.freed >= 20_000 + 1000 + 5000
    assert {s.id for s in store.snapshots.all()} == {held}
    store.close()


def test_prune_command_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = CacheStore.open(tmp_path, COPY)
    a = _snap(store, None, "a", 30_000)
    b = _snap(store, a, "b", 10_000)
    store.close()
    out = _cli(capsys, "--root", str(tmp_path), "prune", "--keep-storage", "100")
    assert out == "Total:  0B\n"
    out = _cli(capsys, "--root", str(tmp_path), "prune")
    lines = out.splitlines()
    assert lines[0].split()[0] == "ID"
    assert {line.split()[0] for line in lines[1:3]} == {a, b}
    assert lines[-1].startswith("Total:  ") and lines[-1] != "Total:  0B"
    data = json.loads(_cli(capsys, "--root", str(tmp_path), "prune", "--format", "json"))
    assert data == {"removed": [], "freed": 0}
    out = _cli(capsys, "--root", str(tmp_path / "missing"), "prune", "-v")
    assert out == "Total:  0B\n"


def test_commands_are_registered() -> None:
    from bkcore.pluginmanager import get_plugin_manager

    keys = set(get_plugin_manager([]).registry("commands").keys())
    assert {"du", "prune"} <= keys
    assert du_cmd.run is not None and prune_cmd.run is not None
