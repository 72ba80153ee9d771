"""SqliteKeyStorage: the KeyStorage contract, persisted across opens."""

from __future__ import annotations

import threading
from pathlib import Path

from bkcore.cache.db import Database
from bkcore.cache.keystore import SqliteKeyStorage
from bkcore.solver.keystorage import KeyStorage, LinkLabel


def test_links_results_and_persistence(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    ks: KeyStorage = SqliteKeyStorage(db)
    label = LinkLabel(0, 0, "sha256:op", "/sel")
    assert not ks.exists("root")
    ks.add_link("root", label, "k1")
    ks.add_link("root", label, "k1")  # idempotent
    ks.add_link("root", label, "k2")
    ks.add_link("root", LinkLabel(1, 0, "sha256:op", "/sel"), "k3")
    ks.add_result("k1", "r-old", 1.0)
    ks.add_result("k1", "r-new", 2.0)
    ks.add_result("k1", "r-new", 2.0)
    assert ks.exists("root") and ks.exists("k1") and ks.exists("k2")
    assert ks.walk_links("root", label) == ["k1", "k2"]
    assert [r.result_id for r in ks.results("k1")] == ["r-new", "r-old"]
    db.close()

    db2 = Database(tmp_path / "m.db")
    ks2 = SqliteKeyStorage(db2)
    assert ks2.walk_links("root", label) == ["k1", "k2"]
    assert [(r.key, r.result_id, r.created_at) for r in ks2.results("k1")] == [
        ("k1", "r-new", 2.0),
        ("k1", "r-old", 1.0),
    ]
    db2.close()


def test_release_result_drops_dangling_links(tmp_path: Path) -> None:
    ks = SqliteKeyStorage(Database(tmp_path / "m.db"))
    lab = LinkLabel(0, 0, "d", "")
    # a -> b -> c (result r1); a -> d (result r2)
    ks.add_link("a", lab, "b")
    ks.add_link("b", lab, "c")
    ks.add_link("a", LinkLabel(0, 0, "x", ""), "d")
    ks.add_result("c", "r1", 1.0)
    ks.add_result("d", "r2", 1.0)
    ks.release_result("r1")
    assert ks.results("c") == []
    assert not ks.exists("c")
    assert not ks.exists("b")  # b led only to c
    assert ks.walk_links("a", lab) == []
    assert ks.walk_links("a", LinkLabel(0, 0, "x", "")) == ["d"]
    assert ks.exists("a")
    ks.release_result("r2")
    assert not ks.exists("a") and not ks.exists("d")


def test_thread_safe_writes(tmp_path: Path) -> None:
    ks = SqliteKeyStorage(Database(tmp_path / "m.db"))

    def work(n: int) -> None:
        for i in range(50):
            ks.add_link(f"s{n}", LinkLabel(0, 0, "d", ""), f"k{n}-{i}")
            ks.add_result(f"k{n}-{i}", f"r{n}-{i}", float(i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(4):
        assert len(ks.walk_links(f"s{n}", LinkLabel(0, 0, "d", ""))) == 50
    assert len(ks.result_ids()) == 200
