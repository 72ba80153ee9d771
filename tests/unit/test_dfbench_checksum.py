"""A file op's content key of a committed snapshot is saved with the snapshot: a later build
(new process, empty in-memory record cache) reuses it instead of reading every selected file
again (bench/dockerfile.py's fully cached 10k-file context row), and it goes away with the
snapshot."""

from __future__ import annotations

from pathlib import Path

from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.fs.contenthash import checksum, combine_selectors
from bkcore.ops import file as fileop
from bkcore.ops.file import Selector


def make_snapshot(store: CacheStore, files: dict[str, str]) -> tuple[str, Path]:
    with store.snapshots.prepare(None, "test input") as m:
        root = m.mount()
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        sid = m.commit()
    num = store.snapshots.get(sid).num
    return sid, store.snapshots.dir / str(num)


def forget_in_memory() -> None:
    with fileop._HASHED_LOCK:
        fileop._HASHED.clear()


def test_saved_key_is_reused_by_a_new_process(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path / "store", COPY)
    try:
        sid, sdir = make_snapshot(store, {"src/a.txt": "alpha", "src/b.txt": "beta"})
        sel = [Selector("/src")]
        first = fileop._checksum(store, sid, sel)
        with store.snapshots.view(sid) as root:
            expected = combine_selectors([checksum(str(root), "/src", follow_links=False)])
        assert first == expected
        saved = list((sdir / "contenthash").iterdir())
        assert len(saved) == 1 and saved[0].read_text() == first

        # Change the stored files behind the store's back (a committed snapshot never
        # changes, so this only shows where the answer comes from): a "new process" (no
        # in-memory records) answers from the saved key, without reading the files.
        (sdir / "fs" / "src" / "a.txt").write_text("changed")
        forget_in_memory()
        assert fileop._checksum(store, sid, sel) == first

        # Another selection is a different key: computed from the files (now changed).
        other = fileop._checksum(store, sid, [Selector("/src/a.txt")])
        with store.snapshots.view(sid) as root:
            now = combine_selectors([checksum(str(root), "/src/a.txt", follow_links=False)])
        assert other == now
        assert len(list((sdir / "contenthash").iterdir())) == 2

        # A corrupt saved file is ignored (recomputed and rewritten).
        for f in (sdir / "contenthash").iterdir():
            f.write_text("garbage")
        forget_in_memory()
        assert fileop._checksum(store, sid, [Selector("/src/a.txt")]) == now

        store.snapshots.delete(sid)
        assert not sdir.exists()
    finally:
        store.close()


def test_selector_options_are_part_of_the_saved_name(tmp_path: Path) -> None:
    store = CacheStore.open(tmp_path / "store", COPY)
    try:
        sid, sdir = make_snapshot(store, {"d/x.txt": "x", "d/y.log": "y"})
        all_files = fileop._checksum(store, sid, [Selector("/d")])
        only_txt = fileop._checksum(store, sid, [Selector("/d", includes=("*.txt",))])
        forget_in_memory()
        assert fileop._checksum(store, sid, [Selector("/d", includes=("*.txt",))]) == only_txt
        assert fileop._checksum(store, sid, [Selector("/d")]) == all_files
        assert all_files != only_txt
        assert len(list((sdir / "contenthash").iterdir())) == 2
    finally:
        store.close()
