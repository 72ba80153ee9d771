"""Start-up cost: importing bkcore's registry client (every FROM image build does) does not
drag in httpx's optional command-line tool and its dependencies (click, pygments, rich)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

PROBE = """
import json, sys
import bkcore.registry_client
import httpx
print(json.dumps({
    "loaded": sorted(m for m in ("click", "pygments", "rich") if m in sys.modules),
    "client": hasattr(httpx, "AsyncClient"),
}))
"""


def test_registry_client_import_skips_httpx_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True
    ).stdout
    result = json.loads(out)
    assert result == {"loaded": [], "client": True}


def test_httpx_still_imports_its_cli_without_bkcore() -> None:
    # The control: the same interpreter without bkcore loads click when it is installed (it
    # is in the dev environment: black needs it), so the test above proves something.
    probe = "import sys, httpx; print('click' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == str(importlib.util.find_spec("click") is not None)
