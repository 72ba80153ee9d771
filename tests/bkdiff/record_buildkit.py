#!/usr/bin/env python3
"""Record what BuildKit v0.11.6 builds for the raw-LLB cases under ``cases/`` as
``expected/<case>.json``, so tests/integration/test_bkdiff_cases.py needs no BuildKit in CI.

    .venv/bin/python tests/bkdiff/record_buildkit.py --buildctl /path/to/buildctl \\
        --addr unix:///tmp/bk/bkit.sock [--cases NAME,...]

It builds nothing and starts nothing: a buildkitd (v0.11.6) must already listen at ``--addr``
(also $BUILDKIT_HOST; the buildctl path also from $BUILDCTL). The case graphs are marshalled
with bkcore's SDK (Definition bytes on buildctl's stdin), the busybox rootfs of
scripts/make-rootfs is sent as the local ``rootfs`` (as the integration tests' ``bk.base()``),
contexts and secrets are staged by ``bkdiff.stage``, and each result is normalised by
``bkdiff.normalise`` (see bkdiff.py for the format).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
MAKE_ROOTFS = HERE.parent.parent / "scripts" / "make-rootfs"


def lib() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bkdiff_lib", HERE / "bkdiff.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


B = lib()


def error_text(output: str) -> str:
    """buildctl's error lines (from the first ``error:`` line on)."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("error:"):
            return "\n".join(lines[i:]).strip()
    return "\n".join(lines[-5:]).strip()


def record(name: str, case: dict[str, Any], buildctl: str, addr: str, rootfs: Path) -> dict:
    # cold: a local source's earlier snapshot (same name, other content) would be synced
    # incrementally, which leaves directory mtimes of that history in the result
    subprocess.run([buildctl, "--addr", addr, "prune", "--all"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix=f"bkdiff-{name}-") as tmp:
        work = Path(tmp)
        locals_, secrets = B.stage(case, work)
        definition = B.definition(case)
        result: dict[str, Any] = {"case": name, "recorded_with": "buildctl/buildkitd v0.11.6"}
        kinds = (
            ["local"] if case.get("expect_error") is not None else case.get("outputs", ["local"])
        )
        outputs: dict[str, Any] = {}
        for kind in kinds:
            dest = work / f"out-{kind}"
            argv = [buildctl, "--addr", addr, "build", "--progress", "plain"]
            for lname, path in {B.ROOTFS_LOCAL: rootfs, **locals_}.items():
                argv += ["--local", f"{lname}={path}"]
            for sid, path in secrets.items():
                argv += ["--secret", f"id={sid},src={path}"]
            argv += ["--output", f"type={kind},dest={dest}"]
            proc = subprocess.run(argv, input=definition, capture_output=True, timeout=600)
            text = (proc.stdout + proc.stderr).decode(errors="replace")
            if case.get("expect_error") is not None:
                if proc.returncode == 0:
                    raise SystemExit(f"{name}: expected an error, buildctl succeeded")
                result["error"] = {"exit": proc.returncode, "text": error_text(text)}
                if case["expect_error"] not in result["error"]["text"]:
                    raise SystemExit(
                        f"{name}: error does not contain {case['expect_error']!r}:\n{text}"
                    )
                continue
            if proc.returncode != 0:
                raise SystemExit(f"{name}: buildctl failed ({proc.returncode}):\n{text}")
            outputs[kind] = B.normalise(kind, dest)
        if outputs:
            result["outputs"] = outputs
        return result


def check(case: dict[str, Any], got: dict[str, Any], want: dict[str, Any]) -> str:
    """What differs between a result and the recording (ignoring the case's differences)."""
    if "error" in want:
        if got.get("error", {}).get("exit") != want["error"]["exit"]:
            return f"exit {got.get('error')} vs recorded {want['error']}"
        return ""
    ignores = list((case.get("differences") or {}).get("ignore", ()))
    out = []
    for kind, expected in want["outputs"].items():
        a = B.apply_ignores(expected, ignores)
        b = B.apply_ignores(got["outputs"][kind], ignores)
        if a != b:
            out.append(f"type={kind} (- recorded, + this builder):\n{B.diff_text(a, b)}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--buildctl", default=os.environ.get("BUILDCTL", "buildctl"))
    ap.add_argument("--addr", default=os.environ.get("BUILDKIT_HOST", ""))
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument(
        "--check",
        action="store_true",
        help="compare with expected/ instead of writing it (e.g. buildctl against bkcore daemon)",
    )
    args = ap.parse_args()
    if not args.addr:
        ap.error("--addr (or $BUILDKIT_HOST) is required: start a buildkitd v0.11.6 first")
    cases = B.load_cases()
    wanted = [n for n in args.cases.split(",") if n]
    for n in wanted:
        if n not in cases:
            ap.error(f"unknown case {n}")
    names = wanted or sorted(cases)
    B.EXPECTED_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bkdiff-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run([str(MAKE_ROOTFS), str(rootfs)], check=True)
        failed = 0
        for n in names:  # one at a time: each case starts from a pruned buildkitd
            try:
                data = record(n, cases[n], args.buildctl, args.addr, rootfs)
            except SystemExit as exc:
                failed += 1
                print(f"FAIL {exc}", file=sys.stderr)
                continue
            if args.check:
                problem = check(cases[n], data, json.loads(B.expected_path(n).read_text()))
                if problem:
                    failed += 1
                    print(f"DIFF {n}\n{problem}")
                    continue
            else:
                B.expected_path(n).write_text(B.dump(data))
            print(f"ok   {n}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
