"""bkcore.fs.securepath: resolution of untrusted paths inside a root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bkcore.fs.errors import FileOpError
from bkcore.fs.securepath import relative, resolve


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("inside\n")
    return root


def test_plain_and_root_paths(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    assert resolve(str(root), "/", follow_final=True) == str(root)
    assert resolve(str(root), "", follow_final=True) == str(root)
    assert resolve(str(root), "/a/b", follow_final=True) == str(root / "a" / "b")
    assert resolve(str(root), "a/./b/", follow_final=False) == str(root / "a" / "b")
    assert resolve(str(root), "/a/new/file", follow_final=True) == str(root / "a/new/file")


def test_dotdot_never_climbs_above_root(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    assert resolve(str(root), "/../../etc/passwd", follow_final=True) == str(
        root / "etc" / "passwd"
    )
    assert resolve(str(root), "a/../../../a/b/..", follow_final=True) == str(root / "a")


def test_absolute_symlink_is_rerooted(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    os.symlink("/etc", root / "a" / "etclink")
    os.symlink("/etc/passwd", root / "pw")
    assert resolve(str(root), "/a/etclink/passwd", follow_final=True) == str(
        root / "etc" / "passwd"
    )
    assert resolve(str(root), "/pw", follow_final=True) == str(root / "etc" / "passwd")
    # without following, the final link names the link itself
    assert resolve(str(root), "/pw", follow_final=False) == str(root / "pw")


def test_relative_symlink_chain_cannot_climb_out(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    os.symlink("../../../../../..", root / "a" / "b" / "up")
    os.symlink("b/up/etc", root / "a" / "hop")
    got = resolve(str(root), "/a/hop/passwd", follow_final=True)
    assert got == str(root / "etc" / "passwd")
    assert os.path.commonpath([got, str(root)]) == str(root)


def test_intermediate_links_are_always_followed(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    os.symlink("a/b", root / "ab")
    assert resolve(str(root), "/ab/x", follow_final=False) == str(root / "a" / "b" / "x")


def test_symlink_loop_is_a_clear_error(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    with pytest.raises(FileOpError, match="too many levels of symbolic links"):
        resolve(str(root), "/loop1/x", follow_final=True)
    assert resolve(str(root), "/loop1", follow_final=False) == str(root / "loop1")


def test_relative_gives_in_root_path(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    assert relative(str(root), str(root)) == "/"
    assert relative(str(root), str(root / "a" / "b")) == "/a/b"
