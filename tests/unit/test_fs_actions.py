"""bkcore.fs.fileops: mkdir, mkfile and rm with every option, and escape attempts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bkcore.fs import fileops
from bkcore.fs.errors import FileOpError, PathNotFoundError
from bkcore.fs.users import Owner, lookup_group, lookup_user

TS = 1_600_000_000_123_456_789


def state(path: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Everything observable about a tree (used for the sentinel outside the root)."""
    out: dict[str, tuple[int, int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                data: bytes | str | None = Path(p).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p)
            else:
                data = None
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_mtime_ns, data)
    return out


@pytest.fixture
def env(tmp_path: Path) -> tuple[Path, Path]:
    """A root with escape hatches pointing at a sentinel directory next to it."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("do not touch\n")
    (outside / "dir").mkdir()
    os.symlink(str(outside), root / "abs-out")  # absolute host path
    os.symlink("../outside", root / "rel-out")  # relative climb
    os.symlink("../../../../../../../../" + str(outside).lstrip("/"), root / "deep-out")
    os.symlink(str(outside / "secret"), root / "secret-link")
    return root, outside


def test_mkdir_mode_owner_timestamp(env: tuple[Path, Path]) -> None:
    root, _ = env
    old = os.umask(0o077)
    try:
        fileops.mkdir(str(root), "/d", 0o775, owner=Owner(1234, 5678), timestamp=TS)
    finally:
        os.umask(old)
    st = os.lstat(root / "d")
    assert stat.S_IMODE(st.st_mode) == 0o775  # not reduced by the umask
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_mtime_ns == TS


def test_mkdir_without_parents_needs_parent_and_keeps_existing(env: tuple[Path, Path]) -> None:
    root, _ = env
    with pytest.raises(PathNotFoundError, match=r"^mkdir /a/b: no such file or directory$"):
        fileops.mkdir(str(root), "/a/b", 0o755)
    fileops.mkdir(str(root), "/a", 0o700)
    fileops.mkdir(str(root), "/a", 0o755, owner=Owner(7, 7))  # exists: kept as is
    st = os.lstat(root / "a")
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == 0


def test_mkdir_make_parents(env: tuple[Path, Path]) -> None:
    root, _ = env
    (root / "x").mkdir(mode=0o700)
    fileops.mkdir(str(root), "/x/y/z", 0o750, make_parents=True, owner=Owner(5, 6), timestamp=TS)
    for rel in ("x/y", "x/y/z"):
        st = os.lstat(root / rel)
        assert stat.S_IMODE(st.st_mode) == 0o750
        assert (st.st_uid, st.st_gid) == (5, 6)
    # BuildKit's MkdirAll times each new directory as it makes it: making z bumps y
    assert os.lstat(root / "x/y/z").st_mtime_ns == TS
    assert os.lstat(root / "x/y").st_mtime_ns != TS
    assert stat.S_IMODE(os.lstat(root / "x").st_mode) == 0o700  # existing parent untouched
    fileops.mkdir(str(root), "/x/y/z", 0o700, make_parents=True)  # no error when present
    (root / "file").write_text("")
    with pytest.raises(FileOpError, match="not a directory"):
        fileops.mkdir(str(root), "/file/sub", 0o755, make_parents=True)


def test_mkfile_options(env: tuple[Path, Path]) -> None:
    root, _ = env
    fileops.mkfile(str(root), "/f.txt", 0o640, b"hello\n", owner=Owner(10, 20), timestamp=TS)
    st = os.lstat(root / "f.txt")
    assert (root / "f.txt").read_bytes() == b"hello\n"
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (10, 20, TS)
    fileops.mkfile(str(root), "/f.txt", 0o600, b"x")  # overwrite truncates
    assert (root / "f.txt").read_bytes() == b"x"
    assert stat.S_IMODE(os.lstat(root / "f.txt").st_mode) == 0o640  # kept, as BuildKit
    with pytest.raises(PathNotFoundError, match=r"^mkfile /no/f: no such file or directory$"):
        fileops.mkfile(str(root), "/no/f", 0o644, b"")
    (root / "d").mkdir()
    with pytest.raises(FileOpError, match="is a directory"):
        fileops.mkfile(str(root), "/d", 0o644, b"")


def test_rm_options(env: tuple[Path, Path]) -> None:
    root, _ = env
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "sub" / "f").write_text("x")
    fileops.rm(str(root), "/d")
    assert not (root / "d").exists()
    fileops.rm(str(root), "/d")  # missing: no error (BuildKit's os.RemoveAll)
    fileops.rm(str(root), "/d", allow_not_found=True)
    (root / "file").write_text("x")
    with pytest.raises(FileOpError, match=r"^rm /file/x: not a directory$"):
        fileops.rm(str(root), "/file/x")
    fileops.rm(str(root), "/file/x", allow_not_found=True)
    with pytest.raises(FileOpError, match="root"):
        fileops.rm(str(root), "/")


def test_rm_wildcard(env: tuple[Path, Path]) -> None:
    root, _ = env
    for name in ("a1.log", "a2.log", "b.log", "keep.txt"):
        (root / name).write_text(name)
    (root / "sub").mkdir()
    (root / "sub" / "a3.log").write_text("x")
    fileops.rm(str(root), "/a*.log", allow_wildcard=True)
    assert sorted(os.listdir(root / "sub")) == ["a3.log"]
    assert not (root / "a1.log").exists() and not (root / "a2.log").exists()
    assert (root / "b.log").exists()
    fileops.rm(str(root), "/none*", allow_wildcard=True)  # nothing matched: no error
    fileops.rm(str(root), "/*/a?.log", allow_wildcard=True)
    assert os.listdir(root / "sub") == []
    # without allow_wildcard the name is literal (and a missing one is no error)
    (root / "b*.log").write_text("literal")
    fileops.rm(str(root), "/b*.log")
    assert (root / "b.log").exists() and not (root / "b*.log").exists()


def test_escapes_stay_inside_root(env: tuple[Path, Path]) -> None:
    root, outside = env
    before = state(outside)
    for link in ("abs-out", "rel-out", "deep-out"):
        fileops.mkdir(str(root), f"/{link}/newdir", 0o755, make_parents=True)
        fileops.mkfile(str(root), f"/{link}/newfile", 0o644, b"x")
        fileops.mkfile(str(root), f"/{link}/secret", 0o644, b"overwritten")
        fileops.rm(str(root), f"/{link}/secret", allow_not_found=True)
        fileops.rm(str(root), f"/{link}/dir", allow_not_found=True)
    fileops.mkfile(str(root), "/../../outside/secret", 0o644, b"x")
    fileops.mkdir(str(root), "/../outside/dir2", 0o755)
    fileops.mkfile(str(root), "/secret-link", 0o644, b"through the link")
    # the absolute links were re-rooted, so the writes landed inside the root
    assert (root / str(outside).lstrip("/") / "secret").read_bytes() == b"through the link"
    assert (root / str(outside).lstrip("/") / "newdir").is_dir()
    fileops.rm(str(root), "/../outside/secret", allow_not_found=True)
    fileops.rm(str(root), "/../../*", allow_wildcard=True)
    assert os.listdir(root) == []
    assert state(outside) == before


def test_rm_removes_a_final_symlink_not_its_target(env: tuple[Path, Path]) -> None:
    root, outside = env
    (root / "real").mkdir()
    (root / "real" / "f").write_text("x")
    os.symlink("real", root / "lnk")
    fileops.rm(str(root), "/lnk")
    assert not os.path.lexists(root / "lnk")
    assert (root / "real" / "f").exists()
    fileops.rm(str(root), "/abs-out")
    assert (outside / "secret").exists()


def test_mkfile_follows_symlink_inside_root(env: tuple[Path, Path]) -> None:
    root, _ = env
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_text("old")
    os.symlink("/etc/conf", root / "conf-link")
    fileops.mkfile(str(root), "/conf-link", 0o644, b"new")
    assert (root / "etc" / "conf").read_bytes() == b"new"
    assert os.path.islink(root / "conf-link")


def test_user_and_group_lookup(env: tuple[Path, Path]) -> None:
    root, outside = env
    (outside / "passwd").write_text("evil:x:666:666::/:/bin/sh\n")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:\n")
    (root / "etc" / "group").write_text("root:x:0:\nstaff:x:50:app\n")
    assert lookup_user(str(root), "app") == 1000
    assert lookup_user(str(root), "root") == 0
    assert lookup_user(str(root), "42") == 42
    assert lookup_group(str(root), "staff") == 50
    with pytest.raises(FileOpError, match="unable to find user nobody"):
        lookup_user(str(root), "nobody")
    with pytest.raises(FileOpError, match="unable to find group app"):
        lookup_group(str(root), "app")
    # /etc/passwd as a symlink leaving the root is read inside the root
    (root / "etc" / "passwd").unlink()
    os.symlink(str(outside / "passwd"), root / "etc" / "passwd")
    with pytest.raises(FileOpError, match="cannot read /etc/passwd"):
        lookup_user(str(root), "evil")


def test_clean_path_keeps_directory_markers() -> None:
    assert fileops.clean_path("//a//b/") == "/a/b/"
    assert fileops.clean_path("a/.") == "/a/."
    assert fileops.clean_path("/.") == "/."
    assert fileops.clean_path("x/../..//y") == "/y"
    assert fileops.clean_path("") == "/"
