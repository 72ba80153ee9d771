"""diff_snapshot(lower, upper) where upper is a layer on lower takes the layer's own changes:
a rewrite that keeps the size and mtime is in the diff (BuildKit diffs the layer itself)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bkcore.cache.db import Database
from bkcore.cache.snapshots import COPY, OVERLAY, SnapshotStore, detect_driver


def _drivers() -> list[str]:
    probe = Path("/tmp") / f"bk-d6ops-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        return [COPY, OVERLAY] if detect_driver(probe) == OVERLAY else [COPY]
    finally:
        probe.rmdir()


@pytest.mark.parametrize("driver", _drivers())
def test_diff_of_a_child_layer_is_its_own_changes(tmp_path: Path, driver: str) -> None:
    st = SnapshotStore(tmp_path, Database(tmp_path / "m.db"), driver)
    with st.prepare(None) as m:
        d = m.mount()
        (d / "change").write_text("old")
        os.utime(d / "change", (978307200, 978307200))
        (d / "same").write_text("s")
        lower = m.commit()
    with st.prepare(lower) as m:
        d = m.mount()
        (d / "grow").write_text("added")
        if driver == OVERLAY:
            # same size and mtime as below: only the layer itself knows it changed
            (d / "change").write_text("new")
            os.utime(d / "change", (978307200, 978307200))
        upper = m.commit()
    diff = st.diff_snapshot(lower, upper)
    with st.view(diff) as v:
        got = {p.name: p.read_text() for p in v.iterdir() if p.is_file()}
    expected = {"grow": "added"}
    if driver == OVERLAY:
        expected["change"] = "new"
    assert got == expected
