"""Differential cases: bkcore's Dockerfile frontend against Docker's BuildKit, from recorded data.

One test per directory under ``cases/`` (same layout as tests/conformance/cases). Each case is
built by bkcore exactly as the conformance harness builds it -- ``bkcore build --frontend
dockerfile.v0 --local context=CTX --local dockerfile=CTX [--opt ...] --output
type=local,dest=...`` and again with ``--output type=oci,dest=...`` -- and normalised and
compared by tests/conformance/run.py itself (imported by path): the file tree with owners and
modes, the platform, the image config keys, the layer count and each layer's entries including
whiteouts. ``expected/NNN.json`` was recorded from Docker 20.10's BuildKit by
``record_docker.py`` (no Docker needed here).

``case.json`` keys beyond the conformance ones:

- ``source``: ``docker`` (recorded from the case's Dockerfile) or ``reference`` (a feature
  Docker 20.10 lacks; the recording is of ``Dockerfile.docker``, which spells out what the
  Dockerfile reference / BuildKit v0.11 does with older instructions).
- ``compare``: ``all`` (default) or ``fs`` (final tree and config only; reference cases whose
  layers are built differently by construction).
- ``v011``: where BuildKit v0.11 (the target) deliberately differs from Docker 20.10's
  recording, ``{"fs": {path: {field: value}}, "reason": "..."}`` is applied to the expectation
  before comparing; the reason is part of the case.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
CONFORMANCE = HERE.parent / "conformance"
CASES = sorted(p.name for p in (HERE / "cases").iterdir() if p.is_dir())
REGISTRY = "127.0.0.1:5000"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dfdiff_conformance_run", CONFORMANCE / "run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RUN = _harness()


def _serves_testbase() -> bool:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/testbase/tags/list", timeout=5) as r:
            return "latest" in json.loads(r.read()).get("tags", [])
    except (OSError, ValueError):
        return False


def _port_free() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", 5000)) != 0


@pytest.fixture(scope="module")
def testbase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The plain-HTTP registry on 127.0.0.1:5000 with ``testbase`` (the cases name it)."""
    if os.geteuid() != 0:
        pytest.skip("the cases build with runc as root")
    for binary in ("runc", "skopeo", "docker-registry"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed")
    proc: subprocess.Popen[bytes] | None = None
    if not _serves_testbase():
        assert _port_free(), "127.0.0.1:5000 is taken by something that does not serve testbase"
        root = tmp_path_factory.mktemp("dfdiff-registry")
        cfg = root / "config.yml"
        cfg.write_text(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: "
            f"{root / 'data'}\nhttp:\n  addr: {REGISTRY}\n"
        )
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if not _port_free():
                break
            time.sleep(0.1)
    try:
        made = subprocess.run(
            [sys.executable, str(CONFORMANCE / "make_base.py")],
            env={**os.environ, "REGISTRY": REGISTRY},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=CONFORMANCE,
        )
        assert made.returncode == 0, made.stderr
        yield f"{REGISTRY}/testbase:latest"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def bkcore_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state root for all cases of the module (the base image is pulled once)."""
    return tmp_path_factory.mktemp("dfdiff-root")


def drop_run_etc_stub(layer: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Docker 20.10 (moby's layer store) lists ``/etc`` itself in every RUN layer: the daemon
    bind-mounts /etc/hosts, /etc/resolv.conf and /etc/hostname and the stubs touch /etc.
    BuildKit v0.11 removes the mount stubs it made and the change with them (conformance README,
    "Layers"), so its layers hold /etc only when the step changed something in it. Drop a bare
    ``/etc`` directory entry when nothing else in the layer is below /etc."""
    if any(e["path"].startswith("/etc/") for e in layer):
        return layer
    return [e for e in layer if not (e["path"] == "/etc" and e["type"] == "dir")]


def _apply_text(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    if "text" in out:
        data = out.pop("text").encode()
        out["size"], out["sha256"] = len(data), RUN.sha(data)
    return out


def expectation(case: Any) -> dict[str, Any]:
    """expected/NNN.json in full form, with the documented v0.11 differences applied."""
    doc = json.loads((HERE / "expected" / f"{case.num}.json").read_text())
    if doc.get("expect_error"):
        return dict(doc)
    full: dict[str, Any] = copy.deepcopy(RUN.expand(doc, RUN.load_base))
    full["image"]["layers"] = [drop_run_etc_stub(layer) for layer in full["image"]["layers"]]
    v011 = case.opts.get("v011") or {}
    for path, fields in (v011.get("fs") or {}).items():
        fields = _apply_text(fields)
        for entries in [full["fs"], *full["image"]["layers"]]:
            for e in entries:
                if e["path"] == path and "whiteout" not in e["type"]:
                    e.update(fields)
    for index, changes in (v011.get("layers") or {}).items():
        layer = full["image"]["layers"][int(index)]
        drop = {(c["path"], c["type"]) for c in changes.get("remove", [])}
        layer[:] = [e for e in layer if (e["path"], e["type"]) not in drop]
        layer.extend(changes.get("add", []))
        layer.sort(key=lambda e: (e["path"], e["type"]))
    return full


@pytest.mark.parametrize("name", CASES)
def test_dockerfile_case_matches_docker(
    name: str, testbase: str, bkcore_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = RUN.Case(str(HERE / "cases" / name))
    want = expectation(case)
    monkeypatch.setenv("BKCORE", f"{sys.executable} -m bkcore --root {bkcore_root}")
    args = argparse.Namespace(builder="bkcore", timeout=300, no_cache=False)
    log: list[str] = []

    if case.expect_error:
        ctx = RUN.stage_context(case, str(tmp_path))
        out = str(tmp_path / "fs")
        rc, text, err = RUN.run_build(
            "bkcore", case, ctx, f"type=local,dest={out}", 300, False, log
        )
        assert err is None, err
        assert rc != 0, "bkcore built a case that must fail"
        assert want["error_contains"] in text, RUN.error_line(text)
        assert not os.path.exists(out) or not os.listdir(out), "a failed build wrote output"
        return

    got, msg = RUN.build_and_normalise(case, args, str(tmp_path), log)
    assert msg is None, msg + "\n" + "\n".join(log)[-4000:]
    if case.opts.get("compare", "all") == "fs":
        for doc in (want, got):
            doc["image"] = {k: doc["image"][k] for k in ("platform", "config")}
    diffs = RUN.compare(want, got)
    assert not diffs, "\n".join(diffs)
