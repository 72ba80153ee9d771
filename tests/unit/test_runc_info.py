"""Worker platforms and labels (no root needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bkcore.errors import PluginError
from bkcore.workers.runc import check, worker_info
from bkcore.workers.runc.info import format_platform, host_platforms


def test_amd64_levels_from_cpu_flags() -> None:
    v2 = "cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3"
    v3 = "avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
    got = host_platforms("x86_64", f"flags\t: fpu {v2} {v3}\n")
    assert [format_platform(p) for p in got] == ["linux/amd64", "linux/amd64/v2", "linux/amd64/v3"]
    assert [format_platform(p) for p in host_platforms("x86_64", "flags\t: fpu\n")] == [
        "linux/amd64"
    ]


def test_other_arches() -> None:
    assert host_platforms("aarch64") == [{"os": "linux", "architecture": "arm64"}]
    assert host_platforms("armv7l") == [{"os": "linux", "architecture": "arm", "variant": "v7"}]


def test_worker_info_labels() -> None:
    info = worker_info(snapshotter="native")
    labels = info["labels"]
    assert labels["org.mobyproject.buildkit.worker.executor"] == "oci"
    assert labels["org.mobyproject.buildkit.worker.snapshotter"] == "native"
    assert labels["org.mobyproject.buildkit.worker.hostname"]
    assert info["platforms"][0]["os"] == "linux"


def test_check_reports_missing_runc(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="runc worker unavailable"):
        asyncio.run(check(str(tmp_path / "absent")))


def test_check_reports_broken_runc(tmp_path: Path) -> None:
    fake = tmp_path / "runc"
    fake.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(PluginError, match="--version failed"):
        asyncio.run(check(str(fake)))


def test_executor_is_a_core_worker_with_a_persistent_id(tmp_path: Path) -> None:
    from bkcore.worker import Worker, WorkerInfo
    from bkcore.workers.runc import RuncExecutor

    worker: Worker = RuncExecutor(str(tmp_path / "state"), snapshotter="native")
    info = worker.info()
    assert worker.name == "runc"
    assert isinstance(info, WorkerInfo)
    assert len(info.id) == 25 and info.id.isalnum()
    assert RuncExecutor(str(tmp_path / "state")).info().id == info.id
    assert RuncExecutor(str(tmp_path / "other")).info().id != info.id
    assert (tmp_path / "state" / "workerid").read_text().strip() == info.id
    assert info.platforms[0].startswith("linux/")
    assert info.labels["org.mobyproject.buildkit.worker.snapshotter"] == "native"
