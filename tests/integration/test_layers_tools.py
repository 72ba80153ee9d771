"""Layers against real tools: GNU tar reads what we write, gzip/zstd decode our blobs,
overlayfs snapshot diffs round trip, device nodes, and a worker without CAP_MKNOD."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bkcore.cache.db import Database
from bkcore.cache.snapshots import OVERLAY, SnapshotStore
from bkcore.layers.apply import apply_layer
from bkcore.layers.compress import compress_tar
from bkcore.layers.write import write_changes, write_directory

pytestmark = pytest.mark.integration


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:  # pragma: no cover - installed on the dev and CI machines
        pytest.skip(f"{tool} is not installed")
    return path


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            body: object = None
            if stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    body = (body, inodes.setdefault(st.st_ino, rel))
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode):
                body = st.st_rdev
            perm = 0 if stat.S_ISLNK(st.st_mode) else st.st_mode & 0o7777
            out[rel] = (stat.S_IFMT(st.st_mode), perm, st.st_uid, st.st_gid, body)
            if not stat.S_ISDIR(st.st_mode):
                out[rel] += (st.st_mtime_ns // 10**9,)
    return out


def build_tree(root: Path) -> None:
    (root / "app").mkdir(parents=True)
    (root / "app" / "hello.txt").write_text("hello\n")
    os.link(root / "app" / "hello.txt", root / "app" / "again.txt")
    os.symlink("hello.txt", root / "app" / "sym")
    deep = root / ("long-directory-name-" * 6) / ("another-long-name-" * 9)
    deep.mkdir(parents=True)
    (deep / ("file-" * 40)).write_text("deep")
    (root / "ütf-8 näme").write_text("u")
    (root / "owned").write_text("o")
    os.chown(root / "owned", 4321, 8765)
    os.chmod(root / "owned", 0o2751)
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(
                os.path.join(dirpath, name), (1_234_567_890, 1_234_567_890), follow_symlinks=False
            )


def test_gnu_tar_lists_and_extracts_our_layer(tmp_path: Path) -> None:
    tar = need("tar")
    src = tmp_path / "src"
    build_tree(src)
    layer = tmp_path / "layer.tar"
    with open(layer, "wb") as f:
        write_directory(src, f)
    listing = subprocess.run([tar, "-tvf", str(layer)], capture_output=True, text=True, check=True)
    assert "app/again.txt link to app/hello.txt" in listing.stdout or (
        "app/hello.txt link to app/again.txt" in listing.stdout
    )
    assert "app/sym -> hello.txt" in listing.stdout
    assert "4321/8765" in listing.stdout and "ütf-8 näme" in listing.stdout
    assert "file-" * 40 in listing.stdout and "1,3" in listing.stdout
    assert listing.stderr == ""
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        [tar, "-xpf", str(layer), "--numeric-owner", "-C", str(out)],
        check=True,
        capture_output=True,
    )
    assert tree_state(out) == tree_state(src)


def test_gnu_tar_lists_whiteouts(tmp_path: Path) -> None:
    from bkcore.cache.changes import Change

    tar = need("tar")
    (tmp_path / "t" / "etc").mkdir(parents=True)
    buf = io.BytesIO()
    write_changes([Change("delete", "etc/passwd")], buf, root=tmp_path / "t")
    (tmp_path / "w.tar").write_bytes(buf.getvalue())
    names = subprocess.run(
        [tar, "-tf", str(tmp_path / "w.tar")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert names == ["etc/", "etc/.wh.passwd"]


def test_system_gzip_and_zstd_decode_our_blobs(tmp_path: Path) -> None:
    tools = {"gzip": need("gzip"), "zstd": need("zstd")}
    src = tmp_path / "src"
    build_tree(src)
    plain = io.BytesIO()
    write_directory(src, plain)
    for name, tool in tools.items():
        blob = tmp_path / f"layer.{name}"
        with open(blob, "wb") as f:
            made = compress_tar(lambda s: write_directory(src, s), f, name)  # type: ignore[arg-type]
        decoded = subprocess.run([tool, "-dc", str(blob)], capture_output=True, check=True).stdout
        assert decoded == plain.getvalue()
        assert made.diff_id == "sha256:" + hashlib.sha256(decoded).hexdigest()


def test_overlay_snapshot_diff_round_trip(tmp_path: Path) -> None:
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():  # pragma: no cover
            pytest.skip("the overlay file system is not available")
    (tmp_path / "s").mkdir()
    store = SnapshotStore(tmp_path / "s", Database(tmp_path / "s" / "m.db"), OVERLAY)
    with store.prepare(None, "base") as m:
        build_tree(m.mount())
        (m.mount() / "dir").mkdir()
        (m.mount() / "dir" / "old").write_text("old")
        (m.mount() / "gone").write_text("bye")
        base = m.commit()
    with store.prepare(base, "edit") as m:
        root = m.mount()
        (root / "gone").unlink()
        shutil.rmtree(root / "dir")  # removed and re-created: an opaque dir in the upper
        (root / "dir").mkdir()
        (root / "dir" / "new").write_text("new")
        (root / "app" / "hello.txt").write_text("changed\n")
        child = m.commit()
    buf = io.BytesIO()
    with store.diff(child) as changes:
        write_changes(changes, buf)
    data = buf.getvalue()
    assert b"dir/.wh.old" in data and b".wh..wh..opq" not in data
    with store.prepare(base, "apply") as m:
        apply_layer(io.BytesIO(data), m.mount(), digest="sha256:ovl")
        with store.view(child) as want:
            assert tree_state(m.mount()) == tree_state(want)
        m.discard()


def test_device_node_refused_without_mknod(tmp_path: Path) -> None:
    setpriv = need("setpriv")
    src = tmp_path / "src"
    build_tree(src)
    layer = tmp_path / "layer.tar"
    with open(layer, "wb") as f:
        write_directory(src, f)
    dest = tmp_path / "dest"
    dest.mkdir()
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from bkcore.errors import SourceError
        from bkcore.layers.apply import apply_layer
        try:
            apply_layer(Path({str(layer)!r}), Path({str(dest)!r}), digest="sha256:dev")
        except SourceError as exc:
            print(exc)
        """
    )
    run = subprocess.run(
        [setpriv, "--bounding-set", "-mknod", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "layer sha256:dev: device node 'null' cannot be created here" in run.stdout
    # with the privilege the same layer applies, the device included
    ok = tmp_path / "ok"
    ok.mkdir()
    apply_layer(layer, ok, digest="sha256:dev")
    assert os.lstat(ok / "null").st_rdev == os.makedev(1, 3)
