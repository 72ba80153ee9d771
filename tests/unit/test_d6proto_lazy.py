"""The wire layer stays out of start-up: nothing imports it until a daemon or client needs it."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = (
        f"{statement}\n"
        "import sys\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith(('bkcore.api', 'grpclib'))"
        " or m == 'betterproto'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_cli_start_up_loads_no_wire_code() -> None:
    loaded = _modules_after("import bkcore.cli.main")
    assert not {m for m in loaded if m.startswith("bkcore.api.pb")}, loaded
    assert "bkcore.api.errors" not in loaded and "bkcore.api.codec" not in loaded


def test_api_package_and_method_names_import_nothing_heavy() -> None:
    assert _modules_after("import bkcore.api, bkcore.api.methods") == {
        "bkcore.api",
        "bkcore.api.methods",
    }
    # the generated package's __init__ imports none of its modules
    assert _modules_after("import bkcore.api.pb") == {"bkcore.api", "bkcore.api.pb"}
