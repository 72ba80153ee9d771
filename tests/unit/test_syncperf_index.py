"""The content index file: column form round trip, and anything foreign reads as empty."""

from __future__ import annotations

import json
from pathlib import Path

from bkcore.session.filesync.index import Record, load_index, save_index


def test_round_trip_keeps_every_record(tmp_path: Path) -> None:
    path = str(tmp_path / "x.bkindex.json")
    records = {
        "a": Record("fe00:1:2", "0" * 64, 12, 1_700_000_000_123_456_789),
        "d/\udcff name\nwith newline": Record("", "f" * 64, 1 << 40, 5),
    }
    save_index(path, records)
    assert load_index(path) == records
    save_index(path, {})
    assert load_index(path) == {}


def test_foreign_or_damaged_files_give_an_empty_index(tmp_path: Path) -> None:
    path = tmp_path / "x.bkindex.json"
    assert load_index(str(path)) == {}  # missing
    bad = [
        b"not json",
        json.dumps({"version": 1, "files": {"a": ["t", "s", 1, 2]}}).encode(),  # old layout
        json.dumps({"version": 2, "files": [["a"], ["t"], ["s"], [1]]}).encode(),
        json.dumps({"version": 2, "files": [["a", "b"], ["t"], ["s"], [1], [2]]}).encode(),
        json.dumps({"version": 2, "files": [["a"], ["t"], ["s"], ["1"], [2]]}).encode(),
        json.dumps({"version": 2, "files": [[1], ["t"], ["s"], [1], [2]]}).encode(),
        json.dumps([1, 2]).encode(),
    ]
    for raw in bad:
        path.write_bytes(raw)
        assert load_index(str(path)) == {}, raw
    path.write_bytes(json.dumps({"version": 2, "files": [["a"], ["t"], ["s"], [1], [2]]}).encode())
    assert load_index(str(path)) == {"a": Record("t", "s", 1, 2)}
