"""Mount stub clean-up keeps a directory's new time when the process changed it (BuildKit
v0.11's stub cleaner; recorded in tests/bkdiff exec-rootfs-changes vs exec-no-changes)."""

from __future__ import annotations

import os
from pathlib import Path

from bkcore.workers.runc.stubs import MountStubs

BEFORE = 2_000_000_000


def _etc(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    os.utime(etc, ns=(BEFORE, BEFORE))
    return etc


def test_untouched_directory_gets_its_time_back(tmp_path: Path) -> None:
    etc = _etc(tmp_path)
    stubs = MountStubs()
    stubs.record(str(tmp_path), ["/etc/hosts"])
    (etc / "hosts").touch()  # runc's stub
    stubs.remove()
    assert etc.stat().st_mtime_ns == BEFORE


def test_directory_the_process_wrote_to_keeps_the_time_of_the_run(tmp_path: Path) -> None:
    etc = _etc(tmp_path)
    stubs = MountStubs()
    stubs.record(str(tmp_path), ["/etc/hosts"])
    (etc / "hosts").touch()
    (etc / "extra").write_text("e")  # the process: echo e > /etc/extra
    after_run = 3_000_000_000
    os.utime(etc, ns=(after_run, after_run))
    stubs.remove()
    assert os.listdir(etc) == ["extra"]
    assert etc.stat().st_mtime_ns == after_run  # not bumped by the removal, not restored
