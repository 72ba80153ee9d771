"""bkcore.fs: ADD-style archive extraction (copy with attempt_unpack) and hostile archives."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bkcore.fs import fileops
from bkcore.fs.errors import FileOpError
from bkcore.fs.unpack import is_archive

MTIME = 1_400_000_000


def entry(name: str, kind: bytes = tarfile.REGTYPE, **kw: Any) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mtime = MTIME
    data: bytes = kw.pop("data", b"")
    for key, value in kw.items():
        setattr(ti, key, value)
    if kind == tarfile.REGTYPE:
        ti.size = len(data)
    return ti, data


def make_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return path


def bundle() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [
        entry("pkg/", tarfile.DIRTYPE, mode=0o700),
        entry("pkg/data.txt", data=b"data content", mode=0o640, uid=1000, gid=1001),
        entry("pkg/hard", tarfile.LNKTYPE, linkname="pkg/data.txt", mode=0o640),
        entry("pkg/run.sh", data=b"#!/bin/sh\necho run ok\n", mode=0o755),
        entry("pkg/sym", tarfile.SYMTYPE, linkname="data.txt", mode=0o777),
        entry("top.txt", data=b"top level\n", mode=0o600),
    ]


def listing(root: Path, under: str) -> list[tuple[str, str, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root / under.lstrip("/")):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
            out.append(("/" + os.path.relpath(p, root), kind, stat.S_IMODE(st.st_mode)))
    return sorted(out)


ADD = {
    "follow_symlink": True,
    "dir_copy_contents": True,
    "create_dest_path": True,
    "allow_wildcard": True,
    "allow_empty_wildcard": True,
    "attempt_unpack": True,
}


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    return src, dest


def test_case_009_archive_variants(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    make_tar(src / "bundle.tar", bundle())
    (src / "plain.gz").write_bytes(gzip.compress(b"just some gzipped text, not a tar\n"))
    (src / "fake.tar.gz").write_bytes(b"not really an archive\n")
    make_tar(src / "nested.tar.gz", [entry("inner/x.txt", data=b"nested content")], "w:gz")
    make_tar(src / "small.tar.bz2", [entry("bz/", tarfile.DIRTYPE, mode=0o750),
                                     entry("bz/y.txt", data=b"bzip2 content\n", mode=0o644)],
             "w:bz2")  # fmt: skip
    make_tar(src / "tiny.tar.xz", [entry("xz.txt", data=b"xz", mode=0o644)], "w:xz")
    for name in os.listdir(src):
        os.chmod(src / name, 0o644)
    fileops.copy(str(src), "/bundle.tar", str(dest), "/x1/", **ADD)
    fileops.copy(str(src), "/bundle.tar", str(dest), "/x2", **ADD)
    fileops.copy(str(src), "/plain.gz", str(dest), "/x3/", **ADD)
    fileops.copy(str(src), "/fake.tar.gz", str(dest), "/x4/", **ADD)
    fileops.copy(str(src), "/nested.tar.gz", str(dest), "/x5/", **ADD)
    fileops.copy(str(src), "/small.tar.bz2", str(dest), "/x6/", **ADD)
    fileops.copy(str(src), "/bundle.tar", str(dest), "/x7/", **{**ADD, "attempt_unpack": False})
    fileops.copy(str(src), "/[bn]*.tar*", str(dest), "/x8/", **ADD)
    fileops.copy(str(src), "/tiny.tar.xz", str(dest), "/x9/", **ADD)
    pkg = [
        ("/pkg", "d", 0o700), ("/pkg/data.txt", "f", 0o640), ("/pkg/hard", "f", 0o640),
        ("/pkg/run.sh", "f", 0o755), ("/pkg/sym", "l", 0o777), ("/top.txt", "f", 0o600),
    ]  # fmt: skip
    assert listing(dest, "/x1") == [(f"/x1{p}", k, m) for p, k, m in pkg]
    assert listing(dest, "/x2") == [(f"/x2{p}", k, m) for p, k, m in pkg]
    assert listing(dest, "/x3") == [("/x3/plain.gz", "f", 0o644)]
    assert listing(dest, "/x4") == [("/x4/fake.tar.gz", "f", 0o644)]
    assert listing(dest, "/x5") == [("/x5/inner", "d", 0o755), ("/x5/inner/x.txt", "f", 0o644)]
    assert listing(dest, "/x6") == [("/x6/bz", "d", 0o750), ("/x6/bz/y.txt", "f", 0o644)]
    assert listing(dest, "/x7") == [("/x7/bundle.tar", "f", 0o644)]
    assert listing(dest, "/x8") == sorted(
        [(f"/x8{p}", k, m) for p, k, m in pkg]
        + [("/x8/inner", "d", 0o755), ("/x8/inner/x.txt", "f", 0o644)]
    )
    assert (dest / "x9" / "xz.txt").read_bytes() == b"xz"
    x1 = dest / "x1" / "pkg"
    assert os.lstat(x1 / "hard").st_ino == os.lstat(x1 / "data.txt").st_ino
    assert os.readlink(x1 / "sym") == "data.txt"
    st = os.lstat(x1 / "data.txt")
    assert (st.st_uid, st.st_gid, st.st_mtime) == (1000, 1001, MTIME)
    assert os.lstat(x1).st_mtime == MTIME  # directory times are set after their entries
    assert (x1 / "run.sh").read_bytes() == b"#!/bin/sh\necho run ok\n"


def test_archive_xattrs_and_owner_option(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    ti, data = entry("f", data=b"x", mode=0o644, uid=5, gid=6)
    ti.pax_headers = {"SCHILY.xattr.user.origin": "archive"}
    make_tar(src / "a.tar", [(ti, data)])
    fileops.copy(str(src), "/a.tar", str(dest), "/new/dir/", owner=_owner(7, 8), **{
        k: v for k, v in ADD.items() if k != "allow_wildcard"})  # fmt: skip
    assert os.getxattr(dest / "new" / "dir" / "f", "user.origin") == b"archive"
    st = os.lstat(dest / "new" / "dir" / "f")
    assert (st.st_uid, st.st_gid) == (5, 6)  # archive entries keep their owners
    assert os.lstat(dest / "new" / "dir").st_uid == 7  # the created destination does not


def _owner(uid: int, gid: int) -> fileops.Owner:
    return fileops.Owner(uid, gid)


def test_is_archive() -> None:
    assert not is_archive("/nonexistent/file")
    assert not is_archive("/")


def state(path: Path) -> list[tuple[str, bytes | None]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            data = Path(p).read_bytes() if os.path.isfile(p) and not os.path.islink(p) else None
            out.append((p, data))
    return sorted(out)


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "./../../evil", "..", "../"])
def test_dotdot_entries_are_refused(tmp_path: Path, name: str) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    make_tar(src / "bad.tar", [entry("ok.txt", data=b"ok"), entry(name, data=b"evil")])
    before = state(tmp_path / "src")
    with pytest.raises(FileOpError, match="points outside the destination"):
        fileops.copy(str(src), "/bad.tar", str(dest), "/out/", **ADD)
    assert not (tmp_path / "evil").exists()
    assert state(tmp_path / "src") == before


def test_symlink_entries_cannot_lead_outside(tmp_path: Path) -> None:
    src, dest, outside = tmp_path / "src", tmp_path / "dest", tmp_path / "outside"
    for p in (src, dest, outside):
        p.mkdir()
    (outside / "secret").write_text("keep")
    before = state(outside)
    make_tar(src / "evil.tar", [
        entry("abs", tarfile.SYMTYPE, linkname=str(outside)),
        entry("abs/pwned", data=b"via absolute link"),
        entry("abs/secret", data=b"overwrite"),
        entry("up", tarfile.SYMTYPE, linkname="../../../../../../.."),
        entry("up" + str(outside) + "/pwned2", data=b"via relative climb"),
        entry("/absolute-name", data=b"rooted"),
        entry("fileln", tarfile.SYMTYPE, linkname=str(outside / "secret")),
        entry("fileln", data=b"replaces the link"),
    ])  # fmt: skip
    fileops.copy(str(src), "/evil.tar", str(dest), "/out/", **ADD)
    assert state(outside) == before
    out = dest / "out"
    inside = out / str(outside).lstrip("/")
    assert (inside / "pwned").read_bytes() == b"via absolute link"
    assert (inside / "secret").read_bytes() == b"overwrite"
    assert (inside / "pwned2").read_bytes() == b"via relative climb"
    assert (out / "absolute-name").read_bytes() == b"rooted"
    assert not os.path.islink(out / "fileln")
    assert (out / "fileln").read_bytes() == b"replaces the link"


def test_hardlinks_to_outside_are_refused(tmp_path: Path) -> None:
    src, dest, outside = tmp_path / "src", tmp_path / "dest", tmp_path / "outside"
    for p in (src, dest, outside):
        p.mkdir()
    (outside / "secret").write_text("keep")
    make_tar(src / "climb.tar", [entry("h", tarfile.LNKTYPE, linkname="../../outside/secret")])
    with pytest.raises(FileOpError, match="hard link 'h' points outside"):
        fileops.copy(str(src), "/climb.tar", str(dest), "/out/", **ADD)
    make_tar(src / "abs.tar", [entry("h", tarfile.LNKTYPE, linkname=str(outside / "secret"))])
    with pytest.raises(FileOpError, match="hard link 'h'"):
        fileops.copy(str(src), "/abs.tar", str(dest), "/out/", **ADD)
    make_tar(src / "vialink.tar", [
        entry("l", tarfile.SYMTYPE, linkname=str(outside)),
        entry("h", tarfile.LNKTYPE, linkname="l/secret"),
    ])  # fmt: skip
    with pytest.raises(FileOpError, match="hard link 'h'"):
        fileops.copy(str(src), "/vialink.tar", str(dest), "/out/", **ADD)
    assert os.lstat(outside / "secret").st_nlink == 1


def test_archive_source_via_symlink_and_dest_symlink(tmp_path: Path) -> None:
    src, dest, outside = tmp_path / "src", tmp_path / "dest", tmp_path / "outside"
    for p in (src, dest, outside):
        p.mkdir()
    make_tar(src / "a.tar", [entry("f", data=b"x")])
    os.symlink("/a.tar", src / "link.tar")
    os.symlink(str(outside), dest / "out")
    fileops.copy(str(src), "/link.tar", str(dest), "/out/", **ADD)
    assert os.listdir(outside) == []
    assert (dest / str(outside).lstrip("/") / "f").read_bytes() == b"x"
