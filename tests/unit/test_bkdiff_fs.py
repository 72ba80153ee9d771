"""File actions as BuildKit v0.11.6 does them (differences found by tests/bkdiff recordings)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bkcore.fs import fileops
from bkcore.fs.users import Owner

TS = 1_600_000_000 * 10**9
SET = 981_173_106 * 10**9


def _src(tmp_path: Path) -> tuple[Path, Path]:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "sub" / "f.txt").write_text("f")
    (src / "dir" / "g.md").write_text("g")
    os.chmod(src / "dir", 0o750)
    for p in (src / "dir" / "sub" / "f.txt", src / "dir" / "g.md", src / "dir" / "sub"):
        os.utime(p, ns=(TS, TS))
    os.utime(src / "dir", ns=(TS, TS))
    dest.mkdir()
    return src, dest


def test_copied_directory_keeps_its_metadata(tmp_path: Path) -> None:
    """copy /dir /d (not contents-only): the new top directory gets the source's mode and
    mtime, or the copy's mode/owner options (BuildKit: copy-dir, copy-mode, copy-chown-ids)."""
    src, dest = _src(tmp_path)
    fileops.copy(str(src), "/dir", str(dest), "/d")
    st = os.lstat(dest / "d")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o750, TS)
    fileops.copy(str(src), "/dir", str(dest), "/m", mode=0o700, owner=Owner(12, 34))
    st = os.lstat(dest / "m")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (0o700, 12, 34, TS)


def test_contents_into_new_directory_get_source_time_not_mode(tmp_path: Path) -> None:
    """dir_copy_contents to a missing destination: made 0755 (conformance 007), then given
    the source directory's mtime (BuildKit: copy-dir-contents-only)."""
    src, dest = _src(tmp_path)
    fileops.copy(str(src), "/dir", str(dest), "/c", dir_copy_contents=True, create_dest_path=True)
    st = os.lstat(dest / "c")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o755, TS)
    fileops.copy(str(src), "/dir", str(dest), "/t", dir_copy_contents=True, timestamp=SET)
    assert os.lstat(dest / "t").st_mtime_ns == SET


def test_parents_made_for_included_entries_are_bumped(tmp_path: Path) -> None:
    """A directory made only because something below it is included gets its metadata
    first, so its children bump its mtime (BuildKit: copy-include-exclude /f/dir)."""
    src, dest = _src(tmp_path)
    fileops.copy(
        str(src), "/", str(dest), "/f", dir_copy_contents=True, include_patterns=["dir/sub"]
    )
    assert os.lstat(dest / "f" / "dir" / "sub").st_mtime_ns == TS  # included itself
    parent = os.lstat(dest / "f" / "dir")
    assert stat.S_IMODE(parent.st_mode) == 0o750 and parent.st_mtime_ns != TS
    assert not (dest / "f" / "dir" / "g.md").exists()


def test_mkdir_parents_only_deepest_keeps_timestamp(tmp_path: Path) -> None:
    """mkdir -p with a timestamp (BuildKit: mkdir-options): /a and /a/b are bumped."""
    fileops.mkdir(str(tmp_path), "/a/b/c", 0o751, make_parents=True, timestamp=SET)
    assert os.lstat(tmp_path / "a" / "b" / "c").st_mtime_ns == SET
    assert os.lstat(tmp_path / "a" / "b").st_mtime_ns != SET
    assert os.lstat(tmp_path / "a").st_mtime_ns != SET


def test_rm_of_missing_path_succeeds(tmp_path: Path) -> None:
    """rm without allow_not_found of a missing path is no error (BuildKit: rm-missing)."""
    (tmp_path / "keep").write_text("k")
    fileops.rm(str(tmp_path), "/missing")
    assert os.listdir(tmp_path) == ["keep"]


def test_mkfile_over_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    """mkfile of an existing 0644 file with mode 0600 rewrites it, mode kept (BuildKit:
    diff-file-states); a new file gets mode & 0777 (buildkitd runs with umask 0)."""
    fileops.mkfile(str(tmp_path), "/f", 0o644, b"old")
    fileops.mkfile(str(tmp_path), "/f", 0o600, b"new")
    st = os.lstat(tmp_path / "f")
    assert (stat.S_IMODE(st.st_mode), (tmp_path / "f").read_bytes()) == (0o644, b"new")
    fileops.mkfile(str(tmp_path), "/g", 0o4777, b"")
    assert stat.S_IMODE(os.lstat(tmp_path / "g").st_mode) == 0o777


def test_image_of_no_layers_has_created_null() -> None:
    """BuildKit writes "created": null when nothing is timed (bkdiff empty-output)."""
    import json

    from bkcore.llb.platforms import Platform
    from bkcore.plugins.exporters.imagecommon import image_config

    doc = json.loads(
        image_config(None, Platform("linux", "amd64", ""), [], epoch=None, buildinfo=None)
    )
    assert "created" in doc and doc["created"] is None
    assert doc["rootfs"] == {"type": "layers", "diff_ids": None}


def test_checksum_of_dangling_followed_link_names_its_target(tmp_path: Path) -> None:
    """BuildKit's cache-key error names the followed path ("/nowhere": not found), not the
    link (bkdiff copy-dangling-follow)."""
    import pytest

    from bkcore.fs.contenthash import ContentHasher
    from bkcore.fs.errors import PathNotFoundError

    (tmp_path / "dangling").symlink_to("nowhere")
    with pytest.raises(PathNotFoundError) as info:
        ContentHasher(str(tmp_path)).checksum("/dangling", follow_links=True)
    assert info.value.path == "/nowhere"
