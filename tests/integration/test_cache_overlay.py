"""Snapshots on overlayfs (root, real mounts), checked against the copying driver."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from bkcore.cache import snapshots as snapmod
from bkcore.cache.db import Database
from bkcore.cache.mount import mount, mount_points_under, unmount
from bkcore.cache.snapshots import COPY, OVERLAY, SnapshotStore, detect_driver
from bkcore.cache.store import CacheStore

pytestmark = pytest.mark.integration


def _overlay_available() -> bool:
    if os.geteuid() != 0:
        return False
    with open("/proc/filesystems") as f:
        return "overlay" in f.read()


if not _overlay_available():  # pragma: no cover - CI runs as root with overlay
    pytest.skip("overlayfs tests need root and the overlay file system", allow_module_level=True)


def _tree(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "->" + os.readlink(p)
        elif p.is_dir():
            out[rel] = f"dir:{stat.S_IMODE(p.lstat().st_mode):o}"
        else:
            out[rel] = p.read_text()
    return out


def _no_mounts(root: Path) -> None:
    assert mount_points_under(root) == []


def _build(st: SnapshotStore, parent: str | None, edit: Callable[[Path], object]) -> str:
    with st.prepare(parent) as m:
        edit(m.mount())
        return m.commit()


def _base(d: Path) -> None:
    (d / "a").write_text("a")
    (d / "dir").mkdir()
    (d / "dir" / "x").write_text("x")
    (d / "dir" / "y").write_text("y")
    (d / "dir" / "sub").mkdir()
    (d / "dir" / "sub" / "deep").write_text("deep")
    (d / "gone").write_text("g")
    (d / "gonedir").mkdir()
    (d / "gonedir" / "f").write_text("f")
    (d / "keep").mkdir()
    (d / "keep" / "k").write_text("k")
    (d / "keep" / "same").write_text("same")
    (d / "mode").write_text("m")
    os.symlink("a", d / "link")


def _edit(d: Path) -> None:
    (d / "gone").unlink()  # whiteout
    shutil.rmtree(d / "gonedir")  # whiteout of a directory
    shutil.rmtree(d / "dir")  # opaque directory: removed and made again
    (d / "dir").mkdir()
    (d / "dir" / "new").write_text("n")
    (d / "keep" / "k").write_text("k2")  # copy-up of a file; keep/ itself unchanged
    os.chmod(d / "mode", 0o600)  # metadata-only change
    (d / "link").unlink()
    os.symlink("b", d / "link")
    (d / "b").write_text("b")


def _stores(tmp_path: Path) -> tuple[SnapshotStore, SnapshotStore]:
    (tmp_path / "ov").mkdir()
    (tmp_path / "cp").mkdir()
    ov = SnapshotStore(tmp_path / "ov", Database(tmp_path / "ov" / "m.db"), OVERLAY)
    cp = SnapshotStore(tmp_path / "cp", Database(tmp_path / "cp" / "m.db"), COPY)
    return ov, cp


def test_auto_selects_overlay(tmp_path: Path) -> None:
    assert detect_driver(tmp_path) == OVERLAY
    assert [p.name for p in tmp_path.iterdir()] == []  # the probe cleaned up
    with CacheStore.open(tmp_path / "store") as store:
        assert store.driver == OVERLAY
    _no_mounts(tmp_path)


def test_upper_holds_only_changes_and_drivers_agree(tmp_path: Path) -> None:
    ov, cp = _stores(tmp_path)
    results: dict[str, object] = {}
    for st in (ov, cp):
        s1 = _build(st, None, _base)
        s2 = _build(st, s1, _edit)
        with st.diff(s2) as changes:
            results[st.driver] = [(c.kind, c.path, c.oci_path) for c in changes]
        with st.view(s2) as v:
            results[st.driver + "-view"] = _tree(v)
    assert results[OVERLAY] == results[COPY]
    assert results[OVERLAY + "-view"] == results[COPY + "-view"]
    assert results[COPY] == [
        ("add", "b", "b"),
        ("modify", "dir", "dir"),
        ("add", "dir/new", "dir/new"),
        ("delete", "dir/sub", "dir/.wh.sub"),
        ("delete", "dir/x", "dir/.wh.x"),
        ("delete", "dir/y", "dir/.wh.y"),
        ("delete", "gone", ".wh.gone"),
        ("delete", "gonedir", ".wh.gonedir"),
        ("modify", "keep/k", "keep/k"),
        ("modify", "link", "link"),
        ("modify", "mode", "mode"),
    ]
    # The overlay upper really holds whiteouts and an opaque dir, and nothing unchanged.
    s2info = next(s for s in ov.all() if s.parent is not None)
    upper = tmp_path / "ov" / "snapshots" / str(s2info.num) / "fs"
    assert stat.S_ISCHR(os.lstat(upper / "gone").st_mode)
    assert os.lstat(upper / "gone").st_rdev == 0
    assert os.getxattr(upper / "dir", "trusted.overlay.opaque") == b"y"
    assert not (upper / "a").exists() and not (upper / "keep" / "same").exists()
    _no_mounts(tmp_path)


def test_merge_and_diff_snapshots_match_copy_driver(tmp_path: Path) -> None:
    ov, cp = _stores(tmp_path)

    def other(d: Path) -> None:
        (d / "other").write_text("o")
        (d / "gone").write_text("G")
        (d / "a").write_text("from-other")
        (d / "dir").mkdir()
        (d / "dir" / "x").write_text("X")

    views: dict[str, list[dict[str, str]]] = {}
    for st in (ov, cp):
        s1 = _build(st, None, _base)
        s2 = _build(st, s1, _edit)
        s3 = _build(st, None, other)
        d12 = st.diff_snapshot(s1, s2)
        d_general = st.diff_snapshot(s3, s2)
        out = []
        for sid in (
            st.merge([s3, s2]),
            st.merge([s2, s3]),
            d12,
            st.merge([s3, d12]),
            d_general,
            st.merge([s3, d_general]),
            st.merge([s1, s1]),
        ):
            with st.view(sid) as v:
                out.append(_tree(v))
        views[st.driver] = out
        if st.driver == OVERLAY:
            # No copies: a merge of plain layer snapshots only stacks their layers.
            for sid in (st.merge([s3, s2]), st.merge([s1, s1])):
                info = st.get(sid)
                assert not (st.dir / str(info.num)).exists()
                assert all(layer.endswith("/fs") for layer in info.layers)
            # A diff's deletions refer to a tree outside the stack: that merge is replayed.
            info = st.get(st.merge([s3, d12]))
            assert info.layers == (f"{info.num}/fs",)
    assert views[OVERLAY] == views[COPY]
    merged_after_diff = views[COPY][3]
    assert "gone" not in merged_after_diff and merged_after_diff["other"] == "o"
    assert "dir/x" not in merged_after_diff and merged_after_diff["dir/new"] == "n"
    _no_mounts(tmp_path)


def test_mounts_for_runtime(tmp_path: Path) -> None:
    ov, _ = _stores(tmp_path)
    s1 = _build(ov, None, _base)
    target = tmp_path / "rt"
    target.mkdir()
    with ov.prepare(s1) as m:
        (mnt,) = m.mounts()
        assert mnt.type == "overlay"
        assert any(o.startswith("upperdir=") for o in mnt.options)
        mount(mnt, target)  # what a runtime would do itself
        try:
            assert (target / "a").read_text() == "a"
            (target / "from-runtime").write_text("r")
        finally:
            unmount(target)
        s2 = m.commit()
    with ov.diff(s2) as changes:
        assert [(c.kind, c.path) for c in changes] == [("add", "from-runtime")]
    (ro,) = ov.mounts(s2)
    mount(ro, target, readonly=True)
    try:
        assert (target / "from-runtime").read_text() == "r"
        with pytest.raises(OSError):
            (target / "nope").write_text("x")
    finally:
        unmount(target)
    _no_mounts(tmp_path)


def test_long_chains_are_flattened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapmod, "MAX_LAYERS", 4)
    ov, _ = _stores(tmp_path)
    parent = None
    for i in range(10):

        def step(d: Path, i: int = i) -> None:
            (d / f"f{i}").write_text(str(i))
            if i:
                (d / f"f{i - 1}").unlink()

        parent = _build(ov, parent, step)
    assert parent is not None
    info = ov.get(parent)
    assert len(info.layers) <= 4
    with ov.view(parent) as v:
        assert _tree(v) == {"f9": "9"}
    with ov.diff(parent) as changes:
        assert [(c.kind, c.path) for c in changes] == [("delete", "f8"), ("add", "f9")]
    merged = ov.merge([parent, parent, _build(ov, None, lambda d: (d / "z").write_text("z"))])
    with ov.view(merged) as v:
        assert _tree(v) == {"f9": "9", "z": "z"}
    _no_mounts(tmp_path)


def test_crash_with_live_mount_is_recovered(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with CacheStore.open(root, OVERLAY) as store:
        base = _build(store.snapshots, None, _base)
    code = f"""
        import time
        from pathlib import Path
        from bkcore.cache.store import CacheStore
        store = CacheStore.open(Path({str(root)!r}), "overlayfs")
        m = store.snapshots.prepare({base!r})
        d = m.mount()
        (d / "half").write_text("partial")
        cm = store.snapshots.view({base!r})
        v = cm.__enter__()
        print(m.num, v, flush=True)
        time.sleep(60)
    """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        num, view = child.stdout.readline().decode().split()
        assert len(mount_points_under(root)) == 2  # the active mount and the view
        assert (Path(view) / "a").read_text() == "a"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with CacheStore.open(root, OVERLAY) as store:
        _no_mounts(root)
        assert [s.id for s in store.snapshots.all()] == [base]
        assert not (root / "snapshots" / num).exists()
        assert list((root / "views").iterdir()) == []
        with store.snapshots.view(base) as v:
            assert (v / "a").read_text() == "a"
    _no_mounts(root)


def test_prune_on_overlay_removes_chains_and_keeps_leased(tmp_path: Path) -> None:
    with CacheStore.open(tmp_path, OVERLAY) as store:
        s1 = _build(store.snapshots, None, _base)
        s2 = _build(store.snapshots, s1, _edit)
        merged = store.snapshots.merge([s2, s1])
        other = _build(store.snapshots, None, lambda d: (d / "o").write_bytes(b"o" * 8192))
        store.keys.add_result("k-merged", merged, 1.0)
        with store.leases.lease("job") as lease:
            lease.add("snapshot", merged)
            sizes = {r.id: r.size for r in store.du()}
            assert sizes[other] >= 8192
            # The upper of s2 holds only its changes, far less than the base tree.
            assert store.prune() == sizes[other]
            assert {s.id for s in store.snapshots.all()} == {s1, s2, merged}
            with store.snapshots.view(merged) as v:
                assert (v / "gone").read_text() == "g"  # s1 stacked on top restores it
        store.prune()
        assert store.snapshots.all() == []
        assert store.keys.results("k-merged") == []
        assert list((tmp_path / "snapshots").iterdir()) == []
    _no_mounts(tmp_path)


@pytest.mark.parametrize("driver", [OVERLAY, COPY])
def test_replaying_the_diff_rebuilds_the_child(tmp_path: Path, driver: str) -> None:
    from bkcore.cache.changes import apply_changes
    from bkcore.cache.fsutil import copy_tree

    st = SnapshotStore(tmp_path, Database(tmp_path / "m.db"), driver)
    s1 = _build(st, None, _base)
    s2 = _build(st, s1, _edit)
    replay = tmp_path / "replay"
    replay.mkdir()
    with st.view(s1) as v:
        copy_tree(v, replay)
    with st.diff(s2) as changes:
        apply_changes(changes, replay)
    with st.view(s2) as v:
        assert _tree(replay) == _tree(v)
        for rel in ("dir", "keep", "mode", "b"):
            a, b = os.lstat(replay / rel), os.lstat(v / rel)
            assert (a.st_mode, a.st_uid, a.st_mtime_ns) == (b.st_mode, b.st_uid, b.st_mtime_ns)
    _no_mounts(tmp_path)


def _types_base(d: Path) -> None:
    (d / "f2d").write_text("file becomes dir")
    (d / "d2f").mkdir()
    (d / "d2f" / "inner").write_text("i")
    (d / "x").write_text("x")
    (d / "h").write_text("h")
    (d / "sub").mkdir()
    (d / "sub" / "deep").mkdir()
    (d / "sub" / "deep" / "leaf").write_text("l")


def _types_edit(d: Path) -> None:
    (d / "f2d").unlink()
    (d / "f2d").mkdir()
    (d / "f2d" / "child").write_text("c")
    shutil.rmtree(d / "d2f")
    (d / "d2f").write_text("now a file")
    os.setxattr(d / "x", "user.note", b"v1")  # metadata-only: xattr
    os.link(d / "h", d / "h2")
    (d / "sub" / "deep" / "leaf").write_text("L")  # deep copy-up, parents unchanged


@pytest.mark.parametrize("driver", [OVERLAY, COPY])
def test_type_changes_xattrs_and_hardlinks(tmp_path: Path, driver: str) -> None:
    st = SnapshotStore(tmp_path, Database(tmp_path / "m.db"), driver)
    s1 = _build(st, None, _types_base)
    s2 = _build(st, s1, _types_edit)
    with st.diff(s2) as changes:
        got = [(c.kind, c.path) for c in changes]
    assert got == [
        ("modify", "d2f"),
        ("modify", "f2d"),
        ("add", "f2d/child"),
        ("add", "h2"),
        ("modify", "sub/deep/leaf"),
        ("modify", "x"),
    ]
    with st.view(s2) as v:
        assert os.getxattr(v / "x", "user.note") == b"v1"
        assert (v / "d2f").read_text() == "now a file"
    _no_mounts(tmp_path)


def test_option_page_limit_flattens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ov, _ = _stores(tmp_path)
    one_lower = len(str(ov.dir / "1" / "fs")) + 1
    # Room for the upper and work dirs plus about three lowers.
    monkeypatch.setattr(snapmod, "MAX_OPTIONS", 2 * one_lower + 40 + 3 * one_lower)
    parent = None
    for i in range(8):

        def step(d: Path, i: int = i) -> None:
            (d / f"f{i}").write_text(str(i))

        parent = _build(ov, parent, step)
    assert parent is not None
    info = ov.get(parent)
    assert len(info.layers) < 8 and any(layer.endswith("/flat") for layer in info.layers)
    with ov.view(parent) as v:
        assert _tree(v) == {f"f{i}": str(i) for i in range(8)}
    _no_mounts(tmp_path)


def _links_base(d: Path) -> None:
    (d / "keep").mkdir()
    (d / "keep" / "deep").write_text("d")
    (d / "rel").symlink_to("keep")
    (d / "abs").symlink_to("/etc")  # resolved on the host if anything follows it


def _links_edit(d: Path) -> None:
    for name in ("rel", "abs"):
        (d / name).unlink()
        (d / name).mkdir()
        (d / name / "new").write_text("n")


@pytest.mark.parametrize("driver", [OVERLAY, COPY])
def test_symlink_replaced_by_a_directory_has_no_lower_children(tmp_path: Path, driver: str) -> None:
    """A lower symlink replaced by a directory: the diff must not list what the link points
    to (the overlay upper dir is opaque; following the lower link listed ``keep/deep`` -- or,
    for an absolute link, the HOST's /etc -- as deletions below it)."""
    st = SnapshotStore(tmp_path, Database(tmp_path / "m.db"), driver)
    s1 = _build(st, None, _links_base)
    s2 = _build(st, s1, _links_edit)
    with st.diff(s2) as changes:
        got = [(c.kind, c.path) for c in changes]
    assert got == [("modify", "abs"), ("add", "abs/new"), ("modify", "rel"), ("add", "rel/new")]
    _no_mounts(tmp_path)
