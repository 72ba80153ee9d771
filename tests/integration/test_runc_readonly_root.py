"""A read-only root mount (LLB: ``readonly`` on the mount at ``/``) reaches runc."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bkcore.workers.runc import MountSpec, ProcessSpec, RuncExecutor

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc binary not installed"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="runc containers need root"),
]

REPO = Path(__file__).resolve().parents[2]


def run(tmp_path: Path, readonly: bool, script: str) -> int:
    rootfs = tmp_path / "rootfs"
    if not rootfs.exists():
        subprocess.run([str(REPO / "scripts" / "make-rootfs"), str(rootfs)], check=True)
    executor = RuncExecutor(str(tmp_path / "state"))
    process = ProcessSpec(args=["/bin/sh", "-c", script], readonly_rootfs=readonly)
    mounts = [MountSpec(dest="/scratch", kind="tmpfs")]
    return asyncio.run(executor.run(str(rootfs), mounts, process))


def test_readonly_root_refuses_writes_but_mounts_stay_writable(tmp_path: Path) -> None:
    assert run(tmp_path, True, "touch /x") != 0
    assert run(tmp_path, True, "touch /scratch/x") == 0
    assert not (tmp_path / "rootfs" / "x").exists()


def test_writable_root_by_default(tmp_path: Path) -> None:
    assert run(tmp_path, False, "touch /x && rm /x") == 0
