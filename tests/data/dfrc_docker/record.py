#!/usr/bin/env python3
"""Record what Docker's BuildKit builds for the cases under ``cases/`` (RUN/COPY/ADD forms the
conformance cases do not cover), so the differential test needs no Docker in CI.

    python3 record.py --docker-host unix:///path/docker.sock [--cases NAME,...]

Each case is copied to a temporary context with normalised modes (dirs 0755, files 0644 or
0755, symlinks kept), built with ``DOCKER_BUILDKIT=1 docker build --network=none --output
type=local,dest=...`` (plus ``--secret`` from ``case.json``), and the exported tree under
``/out`` plus ``/owners.txt`` is written to ``expected/NAME.json``. The cases start from
``127.0.0.1:5000/testbase:latest`` (tests/conformance/make_base.py pushes it).

``tree()`` and ``prepare_context()`` are also used by tests/integration/test_dfrc_docker.py.
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
EXPECTED = HERE / "expected"
#: What each case's result is compared on: these paths of the exported filesystem.
ROOTS = ("out", "owners.txt")


def prepare_context(case: Path, dest: Path) -> None:
    """Copy ``case`` to ``dest`` with modes that do not depend on the checkout's umask."""
    shutil.copytree(case, dest, symlinks=True)
    for root, dirs, files in os.walk(dest):
        os.chmod(root, 0o755)
        for name in files:
            p = os.path.join(root, name)
            if os.path.islink(p):
                continue
            mode = os.stat(p).st_mode
            os.chmod(p, 0o755 if mode & 0o111 else 0o644)
        for name in dirs:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, 0o755)


def _entry(root: Path, path: Path) -> dict[str, Any]:
    st = path.lstat()
    rel = "/" + str(path.relative_to(root))
    out: dict[str, Any] = {"path": rel, "mode": format(stat.S_IMODE(st.st_mode), "04o")}
    if stat.S_ISLNK(st.st_mode):
        out["type"] = "symlink"
        out["target"] = os.readlink(path)
    elif stat.S_ISDIR(st.st_mode):
        out["type"] = "dir"
    elif stat.S_ISREG(st.st_mode):
        out["type"] = "file"
        data = path.read_bytes()
        out["size"] = len(data)
        out["sha256"] = hashlib.sha256(data).hexdigest()
        if len(data) <= 4096:
            try:
                out["text"] = data.decode()
            except UnicodeDecodeError:
                pass
    else:
        out["type"] = "other"
    return out


def tree(export: Path) -> list[dict[str, Any]]:
    """Entries of ``ROOTS`` in a local export, sorted by path."""
    entries: list[dict[str, Any]] = []
    for name in ROOTS:
        top = export / name
        if not top.exists() and not top.is_symlink():
            continue
        entries.append(_entry(export, top))
        if top.is_dir() and not top.is_symlink():
            for dirpath, dirs, files in os.walk(top):
                for n in dirs + files:
                    entries.append(_entry(export, Path(dirpath) / n))
    return sorted(entries, key=lambda e: str(e["path"]))


def case_options(case: Path, ctx: Path) -> list[str]:
    spec = json.loads((case / "case.json").read_text()) if (case / "case.json").exists() else {}
    args: list[str] = []
    for sid, rel in (spec.get("secrets") or {}).items():
        args += ["--secret", f"id={sid},src={ctx / rel}"]
    return args


def record(name: str, docker_host: str, docker: str) -> None:
    case = CASES / name
    with tempfile.TemporaryDirectory(prefix="dfrc-rec-") as tmp:
        ctx = Path(tmp) / "ctx"
        prepare_context(case, ctx)
        dest = Path(tmp) / "out"
        argv = [
            docker, "-H", docker_host, "build", "--no-cache", "--network=none",
            *case_options(case, ctx), "--output", f"type=local,dest={dest}", str(ctx),
        ]  # fmt: skip
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if proc.returncode:
            sys.exit(f"{name}: docker build failed:\n{proc.stderr[-3000:]}")
        version = subprocess.run(
            [docker, "-H", docker_host, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        doc = {
            "recorded_with": f"docker {version} (DOCKER_BUILDKIT=1, built-in Dockerfile frontend)",
            "fs": tree(dest),
        }
    EXPECTED.mkdir(exist_ok=True)
    (EXPECTED / f"{name}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"recorded {name}: {len(doc['fs'])} entries")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docker-host", required=True)
    ap.add_argument("--docker", default="docker")
    ap.add_argument("--cases", default="")
    args = ap.parse_args()
    names = [n for n in args.cases.split(",") if n] or sorted(p.name for p in CASES.iterdir())
    for name in names:
        record(name, args.docker_host, args.docker)


if __name__ == "__main__":
    main()
