"""The bkdiff corpus itself (tests/bkdiff): every case marshals, twice to the same bytes (the
replay builds a graph once per output and mode), and agrees with its recording."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

BKDIFF = Path(__file__).resolve().parents[1] / "bkdiff"


def _lib() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bkdiff_lib_unit", BKDIFF / "bkdiff.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cases_marshal_deterministically_and_match_their_recordings() -> None:
    b = _lib()
    cases = b.load_cases()
    assert len(cases) >= 80
    for name, case in cases.items():
        first = b.definition(case)
        assert b.definition(case) == first, f"{name}: the graph changes when built again"
        recorded = json.loads(b.expected_path(name).read_text())
        assert recorded["case"] == name
        if case.get("expect_error") is not None:
            assert case["expect_error"] in recorded["error"]["text"], name
        else:
            assert sorted(recorded["outputs"]) == sorted(case.get("outputs", ["local"])), name
    stale = {p.stem for p in b.EXPECTED_DIR.glob("*.json")} - set(cases)
    assert not stale, f"recordings without a case: {sorted(stale)}"
