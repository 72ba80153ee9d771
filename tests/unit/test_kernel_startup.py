"""Start-up stays lean: --help and plugins import no heavy or unrelated modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "asyncio",
    "grpclib",
    "betterproto",
    "platformdirs",
    "watchfiles",
    "bkcore.llb.pb",
    "email",
)
# importlib.metadata (and the email package it parses metadata with) costs ~45 ms:
# installed plugins are found by bkcore.entrypoints instead.

PROBE = """
import contextlib, io, json, sys
from bkcore.cli.main import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    status = main(sys.argv[1:])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize(
    "argv", [["--help"], ["build", "--help"], ["plugins"], ["plugins", "--format", "json"]]
)
def test_startup_imports_nothing_heavy(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    assert result["status"] == 0
    loaded = [m for m in result["modules"] if m.split(".")[0] in HEAVY or m in HEAVY]
    assert loaded == []
    assert "importlib.metadata" not in result["modules"]
    if argv == ["--help"]:
        assert "bkcore.cli.plugins_cmd" not in result["modules"]
        assert "bkcore.cli.build_cmd" not in result["modules"]
    if argv[0] == "build":
        assert "bkcore.controller" not in result["modules"]
