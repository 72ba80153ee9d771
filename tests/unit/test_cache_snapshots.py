"""Snapshots with the copying driver (no root needed)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from bkcore.cache.db import Database
from bkcore.cache.snapshots import COPY, SnapshotStore
from bkcore.errors import CacheError


def _store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path, Database(tmp_path / "m.db"), COPY)


def _tree(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "->" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = p.read_text()
    return out


def _base(st: SnapshotStore) -> str:
    with st.prepare(None, "base") as m:
        d = m.mount()
        (d / "a").write_text("a")
        (d / "dir").mkdir()
        (d / "dir" / "x").write_text("x")
        (d / "dir" / "y").write_text("y")
        (d / "gone").write_text("g")
        (d / "keep").mkdir()
        (d / "keep" / "k").write_text("k")
        return m.commit()


def _edit(st: SnapshotStore, parent: str) -> str:
    with st.prepare(parent) as m:
        d = m.mount()
        (d / "gone").unlink()
        shutil.rmtree(d / "dir")
        (d / "dir").mkdir()
        (d / "dir" / "new").write_text("n")
        (d / "keep" / "k").write_text("k2")
        (d / "b").write_text("b")
        return m.commit()


def test_chain_view_and_diff(tmp_path: Path) -> None:
    st = _store(tmp_path)
    s1 = _base(st)
    s2 = _edit(st, s1)
    assert st.get(s2).parent == s1 and st.get(s2).state == "committed"
    with st.view(s1) as v:
        assert _tree(v)["gone"] == "g"
    with st.view(s2) as v:
        assert _tree(v) == {
            "a": "a",
            "b": "b",
            "dir": "dir",
            "dir/new": "n",
            "keep": "dir",
            "keep/k": "k2",
        }
    with st.diff(s2) as changes:
        got = [(c.kind, c.path, c.oci_path) for c in changes]
        sources = {c.path: c.source for c in changes}
    assert got == [
        ("add", "b", "b"),
        ("modify", "dir", "dir"),
        ("add", "dir/new", "dir/new"),
        ("delete", "dir/x", "dir/.wh.x"),
        ("delete", "dir/y", "dir/.wh.y"),
        ("delete", "gone", ".wh.gone"),
        ("modify", "keep/k", "keep/k"),
    ]
    src = sources["keep/k"]
    assert src is not None and src.read_text() == "k2"
    with st.diff(s1) as changes:
        assert [c.kind for c in changes] == ["add"] * 7


def test_metadata_survives_copy(tmp_path: Path) -> None:
    st = _store(tmp_path)
    with st.prepare(None) as m:
        d = m.mount()
        (d / "f").write_text("f")
        os.chmod(d / "f", 0o4751)
        os.link(d / "f", d / "hard")
        os.symlink("f", d / "link")
        os.mkfifo(d / "fifo")
        os.setxattr(d / "f", "user.k", b"v")
        os.utime(d / "f", ns=(1_000_000_000, 2_000_000_000))
        s1 = m.commit()
    with st.prepare(s1) as m:
        d = m.mount()
        assert stat.S_IMODE(os.lstat(d / "f").st_mode) == 0o4751
        assert os.lstat(d / "f").st_ino == os.lstat(d / "hard").st_ino
        assert os.readlink(d / "link") == "f"
        assert stat.S_ISFIFO(os.lstat(d / "fifo").st_mode)
        assert os.getxattr(d / "f", "user.k") == b"v"
        assert os.lstat(d / "f").st_mtime_ns == 2_000_000_000
        s2 = m.commit()
    with st.diff(s2) as changes:
        assert changes == []  # an untouched copy has no changes


def test_merge_stacks_layers_with_deletions(tmp_path: Path) -> None:
    st = _store(tmp_path)
    s1 = _base(st)
    s2 = _edit(st, s1)
    with st.prepare(None) as m:
        d = m.mount()
        (d / "other").write_text("o")
        (d / "gone").write_text("G")  # deleted by s2's chain when merged below it
        (d / "a").write_text("from-s3")
        s3 = m.commit()
    merged = st.merge([s3, s2])
    with st.view(merged) as v:
        t = _tree(v)
    assert t["other"] == "o" and "gone" not in t and t["a"] == "a" and t["dir/new"] == "n"
    merged2 = st.merge([s2, s3])
    with st.view(merged2) as v:
        t = _tree(v)
    assert t["gone"] == "G" and t["a"] == "from-s3"


def test_diff_snapshot_alone_and_merged(tmp_path: Path) -> None:
    st = _store(tmp_path)
    s1 = _base(st)
    s2 = _edit(st, s1)
    diff = st.diff_snapshot(s1, s2)
    with st.view(diff) as v:
        assert _tree(v) == {"b": "b", "dir": "dir", "dir/new": "n", "keep": "dir", "keep/k": "k2"}
    with st.diff(diff) as changes:
        deletes = [c.path for c in changes if c.kind == "delete"]
    assert deletes == ["dir/x", "dir/y", "gone"]
    with st.prepare(None) as m:
        d = m.mount()
        (d / "gone").write_text("G")
        (d / "dir").mkdir()
        (d / "dir" / "x").write_text("X")
        (d / "z").write_text("z")
        s3 = m.commit()
    merged = st.merge([s3, diff])
    with st.view(merged) as v:
        assert _tree(v) == {
            "b": "b",
            "dir": "dir",
            "dir/new": "n",
            "keep": "dir",
            "keep/k": "k2",
            "z": "z",
        }
    scratch_diff = st.diff_snapshot(None, s1)
    with st.view(scratch_diff) as v, st.view(s1) as v1:
        assert _tree(v) == _tree(v1)


def test_discard_commit_errors_and_mounts(tmp_path: Path) -> None:
    st = _store(tmp_path)
    m = st.prepare(None)
    (m.mount() / "x").write_text("x")
    assert m.mounts()[0].type == "bind"
    m.discard()
    assert st.all() == []
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == []
    with pytest.raises(CacheError):
        m.commit()
    s1 = _base(st)
    mnt = st.mounts(s1)[0]
    assert mnt.type == "bind" and "ro" in mnt.options and Path(mnt.source).is_dir()
    with pytest.raises(CacheError):
        st.prepare("no-such-snapshot")
    with st.prepare(s1) as m2:
        with pytest.raises(CacheError):
            st.prepare(m2.id)  # an active snapshot cannot be a parent
    with pytest.raises(CacheError):
        st.delete("missing")


def test_delete_refuses_parent_of_child(tmp_path: Path) -> None:
    st = _store(tmp_path)
    s1 = _base(st)
    s2 = _edit(st, s1)
    with pytest.raises(CacheError):
        st.delete(s1)
    st.delete(s2)
    st.delete(s1)
    assert st.all() == []


def test_recover_removes_dead_active_and_stray_dirs(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    st = SnapshotStore(tmp_path, db, COPY)
    s1 = _base(st)
    live = st.prepare(s1)
    dead = st.prepare(s1)
    (dead.mount() / "half").write_text("written")
    with db.tx() as c:  # make `dead` look like it belonged to a process that died
        c.execute("UPDATE snapshots SET pid=999999999 WHERE id=?", (dead.id,))
    (tmp_path / "snapshots" / "4242").mkdir()
    removed = st.recover()
    assert removed == [dead.id]
    assert {s.id for s in st.all()} == {s1, live.id}
    names = {p.name for p in (tmp_path / "snapshots").iterdir()}
    assert names == {str(st.get(s1).num), str(live.num)}
    live.commit()
