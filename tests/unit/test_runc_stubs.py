"""Mount stub bookkeeping (no root, no runc: the stubs are created by hand like runc would)."""

from __future__ import annotations

import os
from pathlib import Path

from bkcore.workers.runc.stubs import MountStubs


def test_stubs_are_removed_and_parent_time_restored(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.utime(tmp_path / "etc", ns=(1_000_000_000, 2_000_000_000))
    stubs = MountStubs()
    stubs.record(str(tmp_path), ["/etc/hosts", "/mnt/a/b"])
    (tmp_path / "etc" / "hosts").touch()  # what runc does for a file bind
    (tmp_path / "mnt" / "a" / "b").mkdir(parents=True)
    stubs.remove()
    assert sorted(os.listdir(tmp_path)) == ["etc"]
    assert os.listdir(tmp_path / "etc") == []
    assert (tmp_path / "etc").stat().st_mtime_ns == 2_000_000_000


def test_existing_paths_and_real_content_are_kept(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep").write_text("x")
    stubs = MountStubs()
    stubs.record(str(tmp_path), ["/data", "/new/f"])
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("not empty")
    stubs.remove()
    assert (tmp_path / "data" / "keep").read_text() == "x"
    assert (tmp_path / "new" / "f").read_text() == "not empty"


def test_stub_shared_by_two_runs_is_removed_by_the_last(tmp_path: Path) -> None:
    first, second = MountStubs(), MountStubs()
    first.record(str(tmp_path), ["/shared"])
    (tmp_path / "shared").mkdir()  # created by the first run's runc
    second.record(str(tmp_path), ["/shared"])
    first.remove()
    assert (tmp_path / "shared").is_dir()  # still a mount point of the second run
    second.remove()
    assert not (tmp_path / "shared").exists()


def test_stub_under_a_symlink_stays_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to("/../../")
    stubs = MountStubs()
    stubs.record(str(root), ["/link/m"])
    assert stubs.paths == [str(root / "m")]
