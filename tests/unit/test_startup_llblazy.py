"""``bkcore.llb`` loads its SDK submodules on first use (the daemon client needs only pb)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import bkcore.llb


def test_wire_model_import_loads_no_sdk_module() -> None:
    code = (
        "import sys, bkcore.api.pb.control\n"
        "sdk = sorted(m for m in sys.modules if m.startswith('bkcore.llb.')"
        " and m not in ('bkcore.llb.pb',) and not m.startswith('bkcore.llb.pb.'))\n"
        "print(','.join(sdk))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_public_name_resolves_and_star_import_works() -> None:
    for name in bkcore.llb.__all__:
        defining = importlib.import_module(bkcore.llb._LAZY[name])
        assert getattr(bkcore.llb, name) is getattr(defining, name)
    namespace: dict[str, object] = {}
    exec("from bkcore.llb import *", namespace)
    assert set(bkcore.llb.__all__) <= set(namespace)
    assert set(bkcore.llb.__all__) <= set(dir(bkcore.llb))
    try:
        bkcore.llb.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("unknown names must raise AttributeError")
