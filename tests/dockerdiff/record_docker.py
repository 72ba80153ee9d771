#!/usr/bin/env python3
"""Record what Docker's BuildKit builds for the cases under ``cases/`` as ``expected/NNN.json``,
so the differential test (test_dfdiff_cases.py) needs no Docker in CI.

    python3 record_docker.py --docker-host unix:///tmp/dd/docker.sock [--docker /usr/bin/docker]
                             [--cases PATTERN,...]

It starts nothing: a dockerd must already answer at ``--docker-host`` (see README.md), and the
plain-HTTP registry on 127.0.0.1:5000 must serve ``testbase`` (tests/conformance/make_base.py).

Each case is staged and normalised exactly like the conformance harness does it
(tests/conformance/run.py, imported by path: ``stage_context``, ``normalize_fs``,
``normalize_layer``, ``compact``, ``dumps``). Docker 20.10 has no ``oci`` exporter, so the
image is built a second time with ``-t`` and read back with ``docker save``: the config's
compared keys and each layer's normalised entries give the same ``image`` object run.py makes
from an OCI tarball.

Cases with ``"source": "reference"`` in case.json use features Docker 20.10's built-in
Dockerfile frontend lacks (heredocs, ``--link``, ``--parents``, ``--exclude``,
``ADD --checksum``): the recorder builds their ``Dockerfile.docker`` instead, a Dockerfile
that spells out what the Dockerfile reference / BuildKit v0.11 says the feature does with
older instructions, and stores that result (the case's ``notes`` say what is equivalent).
Cases with ``expect_error`` store Docker's error line; the test only checks that bkcore fails
with ``error_contains``. Standard library only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
EXPECTED = HERE / "expected"
RUN_PY = HERE.parent / "conformance" / "run.py"


def conformance_harness() -> ModuleType:
    """tests/conformance/run.py, loaded by path (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("bkcore_conformance_run", RUN_PY)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def case_dirs(patterns: list[str]) -> list[Path]:
    out = []
    for p in sorted(CASES.iterdir()):
        if not p.is_dir() or not re.match(r"^\d+-", p.name):
            continue
        num = p.name.split("-", 1)[0]
        if patterns and not any(pat in p.name or pat == num for pat in patterns):
            continue
        out.append(p)
    return out


def case_spec(case: Path) -> dict[str, Any]:
    cj = case / "case.json"
    return json.loads(cj.read_text()) if cj.exists() else {}


def normalize_docker_save(run: ModuleType, tar_path: str) -> dict[str, Any]:
    """The ``image`` object of run.normalize_image, from a ``docker save`` archive."""
    with tarfile.open(tar_path) as tf:

        def read(name: str) -> bytes:
            f = tf.extractfile(name)
            if f is None:
                raise ValueError(f"docker save archive lacks {name}")
            return f.read()

        manifest = json.loads(read("manifest.json"))[0]
        config = json.loads(read(manifest["Config"]))
        cfg = config.get("config") or {}
        ncfg = {k: cfg[k] for k in run.CONFIG_KEYS if not run.empty(cfg.get(k))}
        plat = "/".join(
            x for x in (config.get("os"), config.get("architecture"), config.get("variant")) if x
        )
        layers = [run.normalize_layer(run.decompress(read(n))) for n in manifest["Layers"]]
    return {"platform": plat, "config": ncfg, "layer_count": len(layers), "layers": layers}


def docker_build(
    docker: list[str], run: ModuleType, case: Any, ctx: str, dockerfile: str, extra: list[str]
) -> subprocess.CompletedProcess[str]:
    o = case.opts
    argv = [*docker, "build", "--no-cache", "--network=none", "-f", dockerfile]
    if o.get("target"):
        argv += ["--target", o["target"]]
    for k, v in sorted((o.get("build_args") or {}).items()):
        argv += ["--build-arg", f"{k}={v}"]
    for sid, src in sorted((o.get("secrets") or {}).items()):
        argv += ["--secret", f"id={sid},src={os.path.join(ctx, src)}"]
    argv += [*extra, ctx]
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False)


def record(case_dir: Path, docker: list[str], run: ModuleType, version: str) -> None:
    case = run.Case(str(case_dir))
    spec = case_spec(case_dir)
    source = spec.get("source", "docker")
    dockerfile_name = "Dockerfile.docker" if source == "reference" else "Dockerfile"
    with tempfile.TemporaryDirectory(prefix="dfdiff-rec-") as tmp:
        ctx = run.stage_context(case, tmp)
        dockerfile = os.path.join(ctx, dockerfile_name)
        fsdir = os.path.join(tmp, "fs")
        doc: dict[str, Any]
        if case.expect_error and source == "reference":
            # Docker cannot build the feature at all: the expectation is the case's own.
            doc = {"expect_error": True, "error_contains": case.error_contains, "error": None}
        elif case.expect_error:
            proc = docker_build(
                docker, run, case, ctx, dockerfile, ["-o", f"type=local,dest={fsdir}"]
            )
            if proc.returncode == 0:
                sys.exit(f"{case.name}: docker built it but the case expects an error")
            found = [ln for ln in proc.stderr.splitlines() if case.error_contains in ln]
            line = run.sanitize(
                re.sub(  # without the progress prefix "#5 0.139 "
                    r"^#\d+ (\d+\.\d+ )?",
                    "",
                    found[-1].strip()
                    if case.error_contains and found
                    else run.error_line(proc.stderr),
                ),
                case,
                tmp,
            )
            if case.error_contains and case.error_contains not in proc.stderr:
                sys.exit(f"{case.name}: docker's error lacks {case.error_contains!r}: {line}")
            doc = {"expect_error": True, "error_contains": case.error_contains, "error": line}
        else:
            proc = docker_build(
                docker, run, case, ctx, dockerfile, ["-o", f"type=local,dest={fsdir}"]
            )
            if proc.returncode:
                sys.exit(f"{case.name}: docker build failed:\n{proc.stderr[-3000:]}")
            tag = f"dfdiff/{case.num}:rec"
            proc = docker_build(docker, run, case, ctx, dockerfile, ["-t", tag])
            if proc.returncode:
                sys.exit(f"{case.name}: docker build -t failed:\n{proc.stderr[-3000:]}")
            saved = os.path.join(tmp, "image.tar")
            subprocess.run([*docker, "save", "-o", saved, tag], check=True)
            subprocess.run([*docker, "rmi", "-f", tag], capture_output=True, check=False)
            actual = {"fs": run.normalize_fs(fsdir), "image": normalize_docker_save(run, saved)}
            doc = run.compact(actual, run.load_base())
    doc = {
        "recorded_with": f"docker {version} (DOCKER_BUILDKIT=1, built-in Dockerfile frontend)",
        "source": source,
        **({"built": dockerfile_name} if source == "reference" else {}),
        **doc,
    }
    EXPECTED.mkdir(exist_ok=True)
    path = EXPECTED / f"{case.num}.json"
    path.with_suffix(".tmp").write_text(run.dumps(doc))
    os.replace(path.with_suffix(".tmp"), path)
    print(f"recorded {case.name} ({source})", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--docker-host", required=True, help="e.g. unix:///tmp/dd/docker.sock")
    ap.add_argument("--docker", default="docker", help="docker client (20.10: /usr/bin/docker)")
    ap.add_argument("--cases", default="", help="comma-separated substrings or numbers")
    args = ap.parse_args()
    if shutil.which(args.docker) is None and not os.access(args.docker, os.X_OK):
        print(f"docker client {args.docker!r} not found", file=sys.stderr)
        return 2
    docker = [args.docker, "-H", args.docker_host]
    version = subprocess.run(
        [*docker, "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    run = conformance_harness()
    failed = 0
    for case_dir in case_dirs([p for p in args.cases.split(",") if p]):
        try:
            record(case_dir, docker, run, version)
        except SystemExit as e:  # one case's failure does not stop the others
            print(e, file=sys.stderr, flush=True)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
