"""``bkcore build --allow ENTITLEMENT``: parsing, and the granted set reaching the exec op.

The controller tests solve an exec op that needs both entitlements in-process: the exec op
checks its entitlements before it prepares any mount or starts a container, so no container
runtime is needed to see which entitlement it still refuses.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from bkcore import llb
from bkcore.cli.build_cmd import ENTITLEMENTS, UsageError, parse_allow, parse_args
from bkcore.controller import BuildOptions, Controller
from bkcore.errors import SolveError
from bkcore.pluginmanager import get_plugin_manager

REPO = Path(__file__).resolve().parents[2]


def test_no_allow_grants_nothing() -> None:
    parsed = parse_args([])
    assert parsed.entitlements == frozenset()
    assert parsed.options(b"").entitlements == frozenset()


def test_allow_is_repeatable_and_reaches_the_build_options() -> None:
    parsed = parse_args(["--allow", "network.host", "--allow=security.insecure"])
    assert parsed.entitlements == {"network.host", "security.insecure"}
    options = parsed.options(b"def")
    assert options.entitlements == frozenset({"network.host", "security.insecure"})
    assert parse_args(["--allow", "network.host"]).options(b"").entitlements == {"network.host"}


def test_a_repeated_entitlement_is_granted_once() -> None:
    assert parse_allow(["security.insecure", "security.insecure"]) == {"security.insecure"}
    assert ENTITLEMENTS == ("network.host", "security.insecure")


@pytest.mark.parametrize("value", ["network.none", "insecure", "", "Network.Host", "network.host "])
def test_unknown_entitlement_is_an_error_naming_it(value: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_args(["--allow", "network.host", "--allow", value])
    message = str(info.value)
    assert repr(value) in message
    assert "unknown entitlement" in message
    assert "network.host, security.insecure" in message
    assert "\n" not in message


def test_allow_needs_a_value() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--allow"])


def test_cli_reports_an_unknown_entitlement_on_one_line_with_status_1(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bkcore", "--root", str(tmp_path), "build", "--allow", "gpu"],
        input=b"",
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 1
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "'gpu'" in lines[0] and "unknown entitlement" in lines[0]


def _needs_both() -> bytes:
    step = llb.scratch().run(
        ["/bin/true"], network=llb.NetMode.HOST, security=llb.SecurityMode.INSECURE
    )
    return step.marshal().to_bytes()


def _refusal(tmp_path: Path, granted: frozenset[str]) -> str:
    options = BuildOptions(_needs_both(), entitlements=granted)

    async def main() -> None:
        async with Controller(get_plugin_manager(), tmp_path) as controller:
            await controller.build(options)

    with pytest.raises(SolveError) as info:
        asyncio.run(main())
    return str(info.value)


def test_controller_passes_no_entitlement_by_default(tmp_path: Path) -> None:
    assert "network.host is not allowed" in _refusal(tmp_path, frozenset())


def test_controller_passes_the_granted_entitlements_to_the_job(tmp_path: Path) -> None:
    # network.host granted: the check gets past it and refuses the other one.
    message = _refusal(tmp_path, frozenset({"network.host"}))
    assert "security.insecure is not allowed" in message
    assert "network.host" not in message
