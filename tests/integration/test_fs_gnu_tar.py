"""bkcore.fs against real GNU tar: archives it writes unpack like ``tar -x`` does."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bkcore.fs import fileops
from bkcore.fs.contenthash import ContentHasher

pytestmark = pytest.mark.integration

TAR = shutil.which("tar")


def build_tree(root: Path) -> None:
    (root / "app" / "bin").mkdir(parents=True)
    (root / "app" / "share" / "doc").mkdir(parents=True)
    (root / "app" / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "app" / "bin" / "tool", 0o755)
    (root / "app" / "share" / "doc" / "README").write_bytes(b"docs\n" * 1000)
    os.link(root / "app" / "share" / "doc" / "README", root / "app" / "README.hard")
    os.symlink("bin/tool", root / "app" / "tool-link")
    os.chown(root / "app" / "share", 1000, 1000)
    os.chmod(root / "app" / "share" / "doc", 0o2750)
    os.mkfifo(root / "app" / "fifo")
    long_name = "n" * 120
    (root / "app" / long_name).write_bytes(b"long name\n")
    os.setxattr(root / "app" / "bin" / "tool", "user.origin", b"gnu")


@pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")
@pytest.mark.parametrize("flag,suffix", [("-z", "tar.gz"), ("-j", "tar.bz2"), ("-J", "tar.xz")])
def test_unpack_matches_gnu_tar_extraction(tmp_path: Path, flag: str, suffix: str) -> None:
    assert TAR is not None
    tree, src, ours, theirs = (tmp_path / n for n in ("tree", "src", "ours", "theirs"))
    for p in (tree, src, ours, theirs):
        p.mkdir()
    build_tree(tree)
    archive = src / f"a.{suffix}"
    subprocess.run([TAR, "--xattrs", "--format=posix", flag, "-cf", str(archive), "-C",
                    str(tree), "app"], check=True)  # fmt: skip
    fileops.copy(str(src), f"/a.{suffix}", str(ours), "/out/", attempt_unpack=True,
                 create_dest_path=True)  # fmt: skip
    (theirs / "out").mkdir()
    os.chmod(theirs / "out", 0o755)
    subprocess.run([TAR, "--xattrs", "--xattrs-include=*", "--same-owner", "-p", flag,
                    "-xf", str(archive), "-C", str(theirs / "out")], check=True)  # fmt: skip
    got = ContentHasher(str(ours)).checksum("/out", follow_links=False)
    want = ContentHasher(str(theirs)).checksum("/out", follow_links=False)
    assert got == want
    assert os.getxattr(ours / "out" / "app" / "bin" / "tool", "user.origin") == b"gnu"
    a = os.lstat(ours / "out" / "app" / "README.hard")
    assert a.st_ino == os.lstat(ours / "out" / "app" / "share" / "doc" / "README").st_ino
    for rel in ("app", "app/bin/tool", "app/share"):
        assert (
            os.lstat(ours / "out" / rel).st_mtime_ns == os.lstat(theirs / "out" / rel).st_mtime_ns
        ), rel


@pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")
def test_copy_matches_gnu_tar_roundtrip(tmp_path: Path) -> None:
    """A tree copied by bkcore checksums like the same tree piped through tar."""
    assert TAR is not None
    tree, ours, theirs = (tmp_path / n for n in ("tree", "ours", "theirs"))
    for p in (tree, ours, theirs):
        p.mkdir()
    build_tree(tree)
    fileops.copy(str(tree), "/app", str(ours), "/app", dir_copy_contents=True)
    pack = subprocess.run([TAR, "--xattrs", "-C", str(tree), "-cf", "-", "app"],
                          check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run([TAR, "--xattrs", "--xattrs-include=*", "-p", "-C", str(theirs), "-xf", "-"],
                   input=pack, check=True)  # fmt: skip
    for p in (ours / "app", theirs / "app"):
        os.chmod(p, 0o755)
        os.chown(p, 0, 0)
    assert ContentHasher(str(ours)).checksum("/app", follow_links=False) == ContentHasher(
        str(theirs)
    ).checksum("/app", follow_links=False)
