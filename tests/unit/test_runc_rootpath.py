"""Path resolution inside an untrusted rootfs (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bkcore.workers.runc.rootpath import (
    missing_components,
    mkdir_all_in_root,
    read_regular_file,
    resolve_in_root,
)


def test_plain_path(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert resolve_in_root(str(tmp_path), "/a/b") == str(tmp_path / "a" / "b")


def test_dotdot_cannot_climb_above_root(tmp_path: Path) -> None:
    assert resolve_in_root(str(tmp_path), "/../../etc/passwd") == str(tmp_path / "etc/passwd")


def test_absolute_symlink_restarts_at_root(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to("/data")
    assert resolve_in_root(str(tmp_path), "/link/x") == str(tmp_path / "data" / "x")


def test_relative_symlink_escape_is_clamped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "passwd").symlink_to("../../../../../" + str(tmp_path / "host_passwd"))
    resolved = resolve_in_root(str(root), "/etc/passwd")
    assert resolved.startswith(str(root) + os.sep)


def test_symlink_loop_raises(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError, match="symbolic links"):
        resolve_in_root(str(tmp_path), "/a")


def test_follow_last_false_keeps_final_link(tmp_path: Path) -> None:
    (tmp_path / "l").symlink_to("/elsewhere")
    assert resolve_in_root(str(tmp_path), "/l", follow_last=False) == str(tmp_path / "l")
    assert resolve_in_root(str(tmp_path), "/l") == str(tmp_path / "elsewhere")


def test_read_regular_file_refuses_escape_and_fifo(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    (root / "etc" / "passwd").symlink_to(str(secret))  # absolute: resolves inside root
    assert read_regular_file(str(root), "/etc/passwd") is None
    (root / str(secret).lstrip("/")).parent.mkdir(parents=True)
    (root / str(secret).lstrip("/")).write_text("inside")
    assert read_regular_file(str(root), "/etc/passwd") == b"inside"
    os.mkfifo(root / "etc" / "group")
    assert read_regular_file(str(root), "/etc/group") is None  # must not block
    assert read_regular_file(str(root), "/etc") is None


def test_missing_components(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert missing_components(str(tmp_path), "/a/b/c") == [
        str(tmp_path / "a" / "b"),
        str(tmp_path / "a" / "b" / "c"),
    ]
    assert missing_components(str(tmp_path), "/a") == []
    assert missing_components(str(tmp_path), "/") == []


def test_mkdir_all_in_root_follows_links_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "w").symlink_to("/../../real")
    host = mkdir_all_in_root(str(root), "/w/x", uid=os.getuid(), gid=os.getgid())
    assert host == str(root / "real" / "x")
    assert (root / "real" / "x").is_dir()
    assert not (tmp_path / "real").exists()
    assert oct((root / "real").stat().st_mode & 0o7777) == oct(0o755)


def test_mkdir_all_in_root_refuses_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        mkdir_all_in_root(str(tmp_path), "/f", uid=os.getuid(), gid=os.getgid())
