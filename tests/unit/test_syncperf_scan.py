"""The destination scan: every entry lstat'ed relative to its directory, parents first."""

from __future__ import annotations

import os
from pathlib import Path

from bkcore.session.filesync.dest import scan


def test_scan_lists_everything_without_following_links(tmp_path: Path) -> None:
    root = tmp_path / "dst"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"x" * 5)
    (root / "top").write_bytes(b"")
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    os.symlink(str(outside), root / "a" / "ln")
    out = scan(str(root))
    assert set(out) == {"a", "a/b", "a/b/f", "a/ln", "top"}
    assert list(out).index("a") < list(out).index("a/b") < list(out).index("a/b/f")
    assert out["a/b/f"].stat.st_size == 5 and out["a/b/f"].link is None
    assert out["a/ln"].link == str(outside)  # not followed: nothing below it
    assert os.path.samestat(out["a/b"].stat, os.lstat(root / "a" / "b"))
    assert scan(str(tmp_path / "missing")) == {}
    (tmp_path / "file").write_bytes(b"")
    assert scan(str(tmp_path / "file")) == {}
