"""Layer tars written from snapshot changes, applied back: trees equal, deterministic bytes."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import struct
import tarfile
from pathlib import Path

import pytest

from bkcore.cache.changes import tree_changes
from bkcore.cache.db import Database
from bkcore.cache.snapshots import COPY, SnapshotStore
from bkcore.layers.apply import apply_layer
from bkcore.layers.write import write_changes, write_directory

T0 = 1_600_000_000
CAP = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)  # cap_net_bind_service=ep


def fix_times(root: Path, base: int = T0) -> None:
    """Give every entry a whole-second mtime derived from its path (children first)."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            p = os.path.join(dirpath, name)
            t = base + sum(os.fsencode(os.path.relpath(p, root))) * 7
            os.utime(p, ns=(t * 10**9, t * 10**9), follow_symlinks=False)
    os.utime(root, (base, base))


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            s = os.path.join(dirpath, name)
            d = os.path.join(dst, os.path.relpath(s, src))
            st = os.lstat(s)
            os.lchown(d, st.st_uid, st.st_gid)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(d, stat.S_IMODE(st.st_mode))
    fix_times(dst)


def snapshot_of(root: Path, *, xattrs: bool = True) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                body: object = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    body = (body, inodes.setdefault(st.st_ino, rel))
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            else:
                body = None
            xa = (
                sorted(
                    (k, os.getxattr(p, k, follow_symlinks=False))
                    for k in os.listxattr(p, follow_symlinks=False)
                )
                if xattrs
                else []
            )
            mtime = st.st_mtime_ns // 10**9
            out[rel] = (
                stat.S_IFMT(st.st_mode),
                st.st_mode & 0o7777 if not stat.S_ISLNK(st.st_mode) else 0,
                st.st_uid,
                st.st_gid,
                mtime,
                body,
                xa,
            )
    return out


def make_lower(root: Path) -> None:
    (root / "app" / "sub").mkdir(parents=True)
    (root / "app" / "keep.txt").write_text("keep")
    (root / "app" / "edit.txt").write_text("before")
    (root / "app" / "gone.txt").write_text("x")
    (root / "olddir" / "deep").mkdir(parents=True)
    (root / "olddir" / "deep" / "f").write_text("f")
    (root / "swap").mkdir()
    (root / "swap" / "child").write_text("c")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF" + bytes(3000))
    fix_times(root)


def edit_upper(root: Path) -> None:
    (root / "app" / "edit.txt").write_text("after, longer")
    (root / "app" / "gone.txt").unlink()
    shutil.rmtree(root / "olddir")
    shutil.rmtree(root / "swap")
    (root / "swap").write_text("now a file")
    (root / "app" / "sub" / "new.bin").write_bytes(os.urandom(70_000))
    (root / "app" / "z-hard").write_text("shared inode")
    os.link(root / "app" / "z-hard", root / "app" / "a-hard")
    os.symlink("../bin/tool", root / "app" / "link")
    os.mkfifo(root / "app" / "pipe")
    suid = root / "bin" / "suid"
    suid.write_text("#!/bin/sh\n")
    os.chmod(suid, 0o4755)
    owned = root / "app" / "owned"
    owned.mkdir(mode=0o750)
    os.chown(owned, 1234, 5678)
    (owned / "f").write_text("o")
    os.chown(owned / "f", 1234, 5678)
    long_dir = root / ("d" * 120) / ("e" * 150)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 200)).write_text("long")
    (root / "app" / "ünïcode").write_text("u")
    os.setxattr(root / "bin" / "tool", "user.note", b"hello")
    os.setxattr(root / "bin" / "tool", "security.capability", CAP)
    fix_times(root)


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    lower = tmp_path / "lower"
    lower.mkdir()
    make_lower(lower)
    upper = tmp_path / "upper"
    copy_tree(lower, upper)
    edit_upper(upper)
    return lower, upper


def layer_bytes(lower: Path | None, upper: Path, **kw: object) -> tuple[bytes, str]:
    buf = io.BytesIO()
    info = write_changes(tree_changes(lower, upper), buf, **kw)  # type: ignore[arg-type]
    data = buf.getvalue()
    assert info.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    return data, info.diff_id


def test_diff_applied_on_parent_gives_the_child_tree(
    trees: tuple[Path, Path], tmp_path: Path
) -> None:
    lower, upper = trees
    data, diff_id = layer_bytes(lower, upper, all_xattrs=True)
    target = tmp_path / "target"
    copy_tree(lower, target)
    fix_times(target)
    applied = apply_layer(io.BytesIO(data), target, digest="sha256:test", diff_id=diff_id)
    assert applied.compression == "uncompressed"
    assert applied.diff_id == diff_id
    assert snapshot_of(target) == snapshot_of(upper)


def test_default_keeps_only_the_capability_xattr(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    data, _ = layer_bytes(lower, upper)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tool = tf.getmember("bin/tool")
    assert tool.pax_headers == {
        "SCHILY.xattr.security.capability": CAP.decode("utf-8", "surrogateescape")
    }


def test_layer_tar_conventions(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    data, _ = layer_bytes(lower, upper)
    assert data.endswith(bytes(1024)) and len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    names = [m.name + ("/" if m.isdir() else "") for m in members]
    # walk order, parents of changed entries first, whiteouts at the deleted name's place
    assert names[:3] == ["app/", "app/a-hard", "app/edit.txt"]
    assert names.index("app/.wh.gone.txt") < names.index("app/link")
    assert ".wh.olddir" in names and not any(n.startswith("olddir/") for n in names)
    assert "swap" in names and "swap/.wh.child" not in names
    assert "app/keep.txt" not in names  # unchanged entries are not written
    by = {m.name: m for m in members}
    assert by["app/z-hard"].islnk() and by["app/z-hard"].linkname == "app/a-hard"
    assert by["app/a-hard"].isreg() and by["app/a-hard"].size == len("shared inode")
    wh = by["app/.wh.gone.txt"]
    assert (wh.mode, wh.uid, wh.gid, wh.size) == (0, 0, 0, 0)
    assert wh.mtime == os.lstat(upper / "app").st_mtime_ns // 10**9
    assert by["bin/suid"].mode == 0o4755
    assert (by["app/owned"].uid, by["app/owned"].gid, by["app/owned"].mode) == (1234, 5678, 0o750)
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert by["app/pipe"].isfifo()
    # raw header of a short name: plain USTAR, no PAX block before it
    assert data[257:265] == b"ustar\x0000" and data[156:157] == b"5" and data[:4] == b"app/"


def test_same_input_gives_same_bytes(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    first, d1 = layer_bytes(lower, upper)
    second, d2 = layer_bytes(lower, upper)
    assert first == second and d1 == d2


def test_source_date_epoch_clamps_newer_mtimes_only(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    (a / "old").write_text("o")
    (a / "new").write_text("n")
    os.utime(a / "old", (500_000_000, 500_000_000))
    os.utime(a / "new", (2_000_000_000, 2_000_000_000))
    buf = io.BytesIO()
    write_directory(a, buf, source_date_epoch=1_000_000_000)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        times = {m.name: m.mtime for m in tf}
    assert times == {"new": 1_000_000_000, "old": 500_000_000}


def test_epoch_makes_two_builds_at_different_times_identical(tmp_path: Path) -> None:
    digests = set()
    plain = set()
    for run, when in enumerate((1_700_000_000, 1_800_000_000)):
        root = tmp_path / f"run{run}"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "conf").write_text("same")
        fix_times(root, when)
        with_epoch = write_directory(root, io.BytesIO(), source_date_epoch=1_000_000_000)
        digests.add(with_epoch.diff_id)
        plain.add(write_directory(root, io.BytesIO()).diff_id)
    assert len(digests) == 1 and len(plain) == 2


def test_snapshot_store_diff_round_trip(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    store = SnapshotStore(tmp_path / "s", Database(tmp_path / "s" / "m.db"), COPY)
    with store.prepare(None, "base") as m:
        root = m.mount()
        make_lower(root)
        base = m.commit()
    with store.prepare(base, "edit") as m:
        edit_upper(m.mount())
        child = m.commit()
    buf = io.BytesIO()
    with store.diff(child) as changes:
        info = write_changes(changes, buf, all_xattrs=True)
    with store.prepare(base, "apply") as m:
        applied = apply_layer(io.BytesIO(buf.getvalue()), m.mount(), digest="sha256:x")
        assert applied.diff_id == info.diff_id
        with store.view(child) as want:
            assert snapshot_of(m.mount()) == snapshot_of(want)
        m.discard()


def test_base_layer_of_a_directory_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_lower(src)
    edit_upper(src)
    buf = io.BytesIO()
    write_directory(src, buf, all_xattrs=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    apply_layer(io.BytesIO(buf.getvalue()), dest, digest="sha256:base")
    assert snapshot_of(dest) == snapshot_of(src)


def test_numbers_too_large_for_ustar_go_to_pax_and_sockets_are_skipped(tmp_path: Path) -> None:
    import socket

    root = tmp_path / "r"
    root.mkdir()
    (root / "big-ids").write_text("x")
    os.chown(root / "big-ids", 3_000_000, 4_000_000)
    os.utime(root / "big-ids", (2**33 + 5, 2**33 + 5))  # beyond 11 octal digits
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    try:
        buf = io.BytesIO()
        write_directory(root, buf)
    finally:
        sock.close()
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["big-ids"]
    m = members[0]
    assert (m.uid, m.gid, m.mtime) == (3_000_000, 4_000_000, 2**33 + 5)
    assert set(m.pax_headers) == {"uid", "gid", "mtime"}
