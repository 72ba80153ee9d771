"""Start-up cost of a build process: what a build imports and starts that it does not need.

Behavioural checks in fresh interpreters (``sys.modules`` dumped at exit): a raw-LLB build on
scratch imports no registry, daemon or container-runtime code; importing betterproto through
bkcore skips importlib.metadata; the runc worker starts no executor and no ``runc list`` when
there is nothing to recover.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bkcore.workers.runc.worker import RuncWorker

V1 = Path(__file__).resolve().parents[1] / "data" / "vectors" / "v1_scratch_mkfile.llb"

# Runs ``bkcore ARGS...`` in-process and writes the loaded module names to PROBE_OUT at exit
# (after the build and its event loop are gone, so lazy imports made while building count).
PROBE = """
import atexit, json, os, sys
out = os.environ["PROBE_OUT"]
def dump():
    with open(out, "w") as fh:  # None entries are recorded absences (httpx's blocked CLI)
        json.dump(sorted(k for k, v in sys.modules.items() if v is not None), fh)
atexit.register(dump)
from bkcore._startup import main  # what the bkcore console script runs
sys.exit(main())
"""


def loaded_by(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env={**os.environ, "PROBE_OUT": str(out)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text()))


def real_modules(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


def test_raw_llb_build_imports_no_registry_daemon_or_runtime_code(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    names = loaded_by(
        tmp_path,
        "--root",
        str(tmp_path / "root"),
        "build",
        "--file",
        str(V1),
        "--output",
        f"type=local,dest={dest}",
        "--progress",
        "plain",
    )
    assert (dest / "hello.txt").exists()  # the build ran and exported
    assert "bkcore.solver.scheduler" in names  # control: the probe sees the build's imports
    unwanted = real_modules(
        names,
        (
            "httpx",
            "h2",
            "hpack",
            "httpcore",
            "importlib.metadata",
            "email",
            "dateutil.parser",
            "grpclib.server",
            "grpclib.client",
            "bkcore.registry_client",
            "bkcore.layers",
            "bkcore.api.pb",
            "bkcore.api.server",
            "bkcore.api.daemon",
            "bkcore.workers.runc.executor",
            "bkcore.workers.runc.ocispec",
            "bkcore.frontends.dockerfile.frontend",
            "bkcore.frontends.dockerfile.parser",
        ),
    )
    assert unwanted == []


VERSION_PROBE = """
import json, sys
{setup}
import betterproto
print(json.dumps([betterproto.__version__, "importlib.metadata" in sys.modules]))
"""


def test_betterproto_through_bkcore_skips_importlib_metadata() -> None:
    expected = importlib.metadata.version("betterproto")

    def probe(setup: str) -> list[object]:
        code = VERSION_PROBE.format(setup=setup)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        result: list[object] = json.loads(out.stdout)
        return result

    assert probe("import bkcore._startup as s; s.install()") == [expected, False]
    # Control: betterproto alone reads its version through importlib.metadata.
    assert probe("") == [expected, True]


DATEUTIL_PROBE = """
import json, sys
from dataclasses import dataclass
from datetime import datetime
import bkcore._startup
bkcore._startup.install()
import betterproto

before = sorted(m for m in ("dateutil.parser", "decimal", "six") if m in sys.modules)

@dataclass(eq=False, repr=False)
class Stamped(betterproto.Message):
    at: datetime = betterproto.message_field(1)

stamped = Stamped().from_dict({"at": "2024-01-02T03:04:05Z"})  # JSON timestamps: isoparse
import dateutil.parser
print(json.dumps({
    "before": before,
    "parsed": stamped.at.isoformat(),
    "real_module": hasattr(dateutil.parser, "parser"),  # a class only the real module has
    "parse": dateutil.parser.parse("2020-05-06").isoformat(),
}))
"""


def test_betterproto_through_bkcore_imports_dateutil_parser_on_first_use() -> None:
    out = subprocess.run(
        [sys.executable, "-c", DATEUTIL_PROBE], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {
        "before": [],
        "parsed": "2024-01-02T03:04:05+00:00",
        "real_module": True,
        "parse": "2020-05-06T00:00:00",
    }
    # Control: betterproto (even after a plain `import bkcore`) imports dateutil.parser at once.
    code = "import sys, bkcore, betterproto; print('dateutil.parser' in sys.modules)"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert plain.stdout.strip() == "True"


def test_plain_import_of_bkcore_or_the_sdk_installs_no_hooks() -> None:
    code = (
        "import sys; import bkcore; from bkcore import llb; import dataclasses, betterproto; "
        "ours = [f for f in sys.meta_path if 'bkcore' in getattr(f, '__module__', '')]; "
        "print(ours == [], hasattr(dataclasses, 'exec'), 'importlib.metadata' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["True", "False", "True"], out.stderr


def test_hooks_can_be_turned_off() -> None:
    code = "import bkcore._startup as s, sys; print(s.install(), len(sys.meta_path))"
    env = {**os.environ, "BKCORE_NO_STARTUP_HOOKS": "1"}
    plain = subprocess.run(
        [sys.executable, "-c", "import sys; print(False, len(sys.meta_path))"],
        capture_output=True,
        text=True,
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout == plain.stdout, out.stderr


def test_runc_worker_recover_with_nothing_left_starts_nothing(tmp_path: Path) -> None:
    # A runc binary that does not exist: any attempt to run `runc list` would raise OSError.
    worker = RuncWorker.for_root(tmp_path, runc=str(tmp_path / "no-runc"))
    assert asyncio.run(worker.recover()) == []
    (tmp_path / "runc" / "runc").mkdir(parents=True)
    (tmp_path / "runc" / "bundles").mkdir()
    assert asyncio.run(worker.recover()) == []  # empty folders: still nothing to recover
    assert worker.info().platforms  # identity without the executor
    assert worker._executor is None


def test_runc_worker_recover_with_a_leftover_bundle_asks_runc(tmp_path: Path) -> None:
    (tmp_path / "runc" / "bundles" / "abc").mkdir(parents=True)
    worker = RuncWorker.for_root(tmp_path, runc=str(tmp_path / "no-runc"))
    with pytest.raises(OSError):
        asyncio.run(worker.recover())  # went to `runc list` (the controller ignores OSError)
    assert worker._executor is not None


def test_runc_worker_module_does_not_import_the_executor() -> None:
    code = (
        "import sys, bkcore.workers.runc.worker as w; "
        "w.RuncWorker('/nonexistent').info(); "
        "print('bkcore.workers.runc.executor' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
