"""Differential: RUN/COPY/ADD forms the conformance cases do not cover, built by bkcore and
compared with what Docker 20.10's BuildKit built (recorded as data by
tests/data/dfrc_docker/record.py, so no Docker is needed here).

Compared: every path under ``/out`` of the local export (type, permission bits, size,
content, symlink target) and ``/owners.txt`` (``stat`` of each path under /out inside the
image, for owners). Where BuildKit v0.11 (the target) differs from Docker 20.10's older
BuildKit, ``V011_DIFFERENCES`` gives the v0.11 value and why; bkcore must produce that one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "dfrc_docker"
MAKE_BASE = REPO / "tests" / "conformance" / "make_base.py"
CASES = sorted(p.name for p in (DATA / "cases").iterdir())

#: case -> path -> (v0.11 text, reason). Docker 20.10's BuildKit left RUN mount points
#: (cache/bind/tmpfs/secret targets and the parents it created for them) in the rootfs;
#: v0.11 removes them again (removeMountStubsRecursive; conformance README "Layers").
V011_DIFFERENCES: dict[str, dict[str, tuple[str, str]]] = {
    "run-mount-forms": {
        "/out/root-list": (
            ".\n..\nbin\ndev\netc\nhome\nout\nproc\nroot\nsys\ntmp\nwork\n",
            "v0.11 removes the mount points /cache, /ctx, /t, /tm and /run (secrets)",
        ),
        "/out/work-list": (".\n..\n", "v0.11 removes the mount points /work/cc and /work/rel"),
        "/out/run-secrets": (
            "ls: /run/secrets: No such file or directory\n",
            "the secret mount point /run/secrets of earlier RUNs is gone in v0.11",
        ),
        "/out/secret-absent": (
            "none\n",
            "a missing optional secret mounts nothing and /run/secrets is gone (conformance "
            "018's /s4.txt recorded from v0.11 says 'absent' the same way)",
        ),
    },
}


def _recorder() -> Any:
    spec = importlib.util.spec_from_file_location("dfrc_docker_record", DATA / "record.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def testbase(vector_registry: Any, busybox_rootfs: Path) -> str:
    """``127.0.0.1:5000/testbase:latest`` pushed by the conformance make_base.py."""
    if os.geteuid() != 0:
        pytest.skip("runc builds need root")
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed (make_base.py pushes with it)")
    proc = subprocess.run(
        [sys.executable, str(MAKE_BASE)],
        env={**os.environ, "REGISTRY": "127.0.0.1:5000"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=MAKE_BASE.parent,
    )
    assert proc.returncode == 0, proc.stderr
    return "127.0.0.1:5000/testbase:latest"


def _text(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(e["path"]): e for e in entries}


@pytest.mark.parametrize("name", CASES)
def test_matches_docker_buildkit(name: str, testbase: str, tmp_path: Path, bkcli: Any) -> None:
    rec = _recorder()
    ctx = tmp_path / "ctx"
    rec.prepare_context(DATA / "cases" / name, ctx)
    dest = tmp_path / "out"
    argv = [
        *bkcli(tmp_path / "root"), "build",
        "--frontend", "dockerfile.v0", "--local", f"context={ctx}", "--local",
        f"dockerfile={ctx}", *rec.case_options(DATA / "cases" / name, ctx),
        "--output", f"type=local,dest={dest}",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]

    want = _text(json.loads((DATA / "expected" / f"{name}.json").read_text())["fs"])
    got = _text(rec.tree(dest))
    for path, (v011, _why) in V011_DIFFERENCES.get(name, {}).items():
        assert got[path].get("text") == v011, path
        got.pop(path)
        want.pop(path)
    assert sorted(got) == sorted(want)
    diffs = {p: (want[p], got[p]) for p in want if want[p] != got[p]}
    assert not diffs, json.dumps(diffs, indent=1)
