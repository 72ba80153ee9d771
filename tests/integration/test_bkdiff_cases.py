"""Raw-LLB differential cases: bkcore against recordings of BuildKit v0.11.6 (tests/bkdiff).

One test per case of ``tests/bkdiff/cases/*.py``: the case's graph (marshalled with the SDK)
is piped into ``bkcore build`` through the ``bk`` fixture's command line (``--local rootfs=``
the busybox rootfs, the case's staged contexts and ``--secret``s) once per recorded output
(``--output type=local|tar|oci``); the result is normalised by tests/bkdiff/bkdiff.py exactly
as ``record_buildkit.py`` normalised buildctl's, and must be equal (minus the fields a case
lists in ``differences`` with its reason). A failing case must fail with BuildKit's exit code
and an error line containing the case's ``expect_error``, which the recording also contains.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BKDIFF = Path(__file__).resolve().parents[1] / "bkdiff"


def _lib() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bkdiff_lib", BKDIFF / "bkdiff.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


B = _lib()
CASES = B.load_cases()


def _build(bk: Any, case: dict[str, Any], work: Path, kind: str) -> tuple[int, str, Path]:
    locals_, secrets = B.stage(case, work)
    work.mkdir(parents=True, exist_ok=True)
    dest = work / f"out-{kind}"
    argv = bk.argv(
        locals={k: str(v) for k, v in locals_.items()},
        secrets=[f"id={sid},src={path}" for sid, path in secrets.items()],
    )
    argv += ["--output", f"type={kind},dest={dest}"]
    proc = subprocess.run(
        argv, input=B.definition(case), capture_output=True, timeout=300, cwd=bk.tmp
    )
    err = proc.stderr.decode(errors="replace")
    lines = "\n".join(ln for ln in err.splitlines() if not ln.startswith("{"))
    return proc.returncode, lines, dest


@pytest.mark.parametrize("name", sorted(CASES))
def test_bkdiff_case(bk: Any, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    expected = json.loads(B.expected_path(name).read_text())
    differences = case.get("differences") or {}
    ignores = list(differences.get("ignore", ()))
    if case.get("expect_error") is not None:
        code, text, _ = _build(bk, case, tmp_path / "local", "local")
        want = expected["error"]
        assert code == want["exit"], f"exit {code}, BuildKit {want['exit']}: {text}"
        assert case["expect_error"] in want["text"]
        assert case["expect_error"] in text, f"BuildKit: {want['text']}\nbkcore: {text}"
        return
    problems = []
    for kind, want in expected["outputs"].items():
        code, text, dest = _build(bk, case, tmp_path / kind, kind)
        assert code == 0, f"{kind}: {text}"
        got = B.normalise(kind, dest)
        want_n = B.apply_ignores(want, ignores)
        got_n = B.apply_ignores(got, ignores)
        if want_n != got_n:
            problems.append(f"type={kind} (- BuildKit, + bkcore):\n{B.diff_text(want_n, got_n)}")
    assert not problems, "\n".join(problems)
