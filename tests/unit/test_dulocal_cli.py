"""``bkcore du`` and ``bkcore prune`` list and reclaim the local source's synced copies."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bkcore import config
from bkcore.cache.localcopies import INDEX, copy_dir_for, lock_copy
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.cli.main import run


@pytest.fixture(autouse=True)
def _reset_root() -> Iterator[None]:
    yield
    config.set_root(None)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert run(list(argv)) == 0
    return capsys.readouterr().out


def _copy(root: Path, name: str, size: int, age: float = 0.0) -> Path:
    base = copy_dir_for(root, name, "", "project")

    async def fill() -> None:
        async with lock_copy(base, f"local source for {name}"):
            (base / "tree").mkdir()
            (base / "tree" / "f").write_bytes(os.urandom(size))
            (base / INDEX).write_text("{}")

    asyncio.run(fill())
    if age:
        then = time.time() - age
        for f in (base / "lock", base / INDEX):
            os.utime(f, (then, then))
    return base


def test_du_lists_a_copy_as_source_local(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    CacheStore.open(tmp_path, COPY).close()
    base = _copy(tmp_path, "context", 60_000, age=7200)
    rid = "local-" + base.name
    text = _cli(capsys, "--root", str(tmp_path), "du")
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "RECLAIMABLE", "SIZE", "LAST", "ACCESSED"]
    row = lines[1].split()
    assert row[:2] == [rid, "true"] and row[3:] == ["2", "hours", "ago"]
    assert row[2].endswith("kB") and float(row[2][:-2]) >= 60
    assert lines[-1].startswith("Total:") and lines[-1] != "Total:       0B"
    (rec,) = json.loads(_cli(capsys, "--root", str(tmp_path), "du", "--format", "json"))
    assert rec["id"] == rid and rec["type"] == "source.local" and rec["size"] >= 60_000
    assert rec["reclaimable"] and not rec["in_use"] and not rec["mutable"]
    verbose = _cli(capsys, "--root", str(tmp_path), "du", "-v")
    assert "Type:        source.local" in verbose
    assert "Description: local source for context" in verbose


def test_du_shows_a_syncing_copy_as_not_reclaimable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    CacheStore.open(tmp_path, COPY).close()
    base = _copy(tmp_path, "ctx", 1000)

    async def main() -> None:
        async with lock_copy(base, "local source for ctx"):
            (rec,) = json.loads(_cli(capsys, "--root", str(tmp_path), "du", "--format", "json"))
            assert rec["in_use"] and not rec["reclaimable"]

    asyncio.run(main())


def test_prune_lists_and_removes_copies_by_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    CacheStore.open(tmp_path, COPY).close()
    old = _copy(tmp_path, "old", 40_000, age=3 * 86400)
    recent = _copy(tmp_path, "recent", 20_000)
    out = _cli(capsys, "--root", str(tmp_path), "prune", "--keep-duration", "24h")
    lines = out.splitlines()
    assert lines[0].split()[0] == "ID"
    assert [line.split()[0] for line in lines[1:-2]] == ["local-" + old.name]
    assert lines[-1].startswith("Total:  ") and lines[-1] != "Total:  0B"
    assert not old.exists() and (recent / "tree" / "f").exists()

    async def while_syncing() -> dict[str, object]:
        async with lock_copy(recent, "local source for recent"):
            out = _cli(capsys, "--root", str(tmp_path), "prune", "--format", "json")
            return dict(json.loads(out))

    assert asyncio.run(while_syncing()) == {"removed": [], "freed": 0}
    assert (recent / "tree" / "f").exists()
    data = json.loads(_cli(capsys, "--root", str(tmp_path), "prune", "--format", "json"))
    assert [r["id"] for r in data["removed"]] == ["local-" + recent.name]
    assert data["removed"][0]["type"] == "source.local" and data["freed"] >= 20_000
    assert not recent.exists()
