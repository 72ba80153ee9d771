"""The runc worker plugin registration and ``bkcore debug workers`` (no root needed)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from bkcore.cli.workers_cmd import stored_driver, to_text
from bkcore.pluginmanager import BUILTIN_PLUGINS, BkPluginManager
from bkcore.worker import Worker, WorkerInfo
from bkcore.workers.runc import RuncWorker


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bkcore", *argv], capture_output=True, text=True, check=True
    )


def test_plugin_registers_worker_and_command() -> None:
    assert "bkcore.workers.runc.plugin" in BUILTIN_PLUGINS
    pm = BkPluginManager()
    pm.load_module("bkcore.workers.runc.plugin")
    workers = pm.registry("workers")
    assert workers.load("runc") is RuncWorker
    entry = pm.registry("commands").get("debug workers")
    assert entry is not None and entry.target == "bkcore.cli.workers_cmd"


def test_runc_worker_is_a_worker(tmp_path: Path) -> None:
    worker: Worker = RuncWorker.for_root(tmp_path, snapshotter="copy")
    assert worker.name == "runc"
    info = worker.info()
    assert info.labels["org.mobyproject.buildkit.worker.snapshotter"] == "copy"
    assert (tmp_path / "runc" / "workerid").read_text().strip() == info.id


def test_debug_workers_json_is_stable_and_uses_the_store_driver(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "metadata.db")
    db.execute("CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO meta VALUES ('driver', 'copy')")
    db.commit()
    db.close()
    assert stored_driver(tmp_path) == "copy"
    first = json.loads(
        run_cli("--root", str(tmp_path), "debug", "workers", "--format", "json").stdout
    )
    second = json.loads(
        run_cli("--root", str(tmp_path), "debug", "workers", "--format", "json").stdout
    )
    assert first == second
    (worker,) = first["workers"]
    assert worker["name"] == "runc"
    assert worker["id"] == (tmp_path / "runc" / "workerid").read_text().strip()
    assert worker["platforms"][0].startswith("linux/")
    assert worker["labels"]["org.mobyproject.buildkit.worker.snapshotter"] == "copy"


def test_text_table_and_verbose() -> None:
    info = WorkerInfo("abc", ("linux/amd64", "linux/amd64/v2"), {"k": "v"})
    table = to_text([("runc", info)], verbose=False)
    assert table.splitlines() == ["ID     PLATFORMS", "abc    linux/amd64,linux/amd64/v2"]
    verbose = to_text([("runc", info)], verbose=True)
    assert "ID:\t\tabc\n" in verbose and "\tk:\tv\n" in verbose
    assert stored_driver(Path("/nonexistent-bkcore-root")) is None
