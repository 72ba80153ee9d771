"""The wheel holds every package: build it, install it into a fresh venv, import every
built-in plugin and every listed package from the wheel, run the console script."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from bkcore.pluginmanager import BUILTIN_PLUGINS

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]

_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench"
)

# Runs inside the venv: import each module, report where it came from.
PROBE = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = importlib.import_module(name).__file__
    except Exception as exc:
        found[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(found))
"""


def test_every_package_directory_is_listed_in_pyproject() -> None:
    """The pitfall: a subpackage missing from ``packages`` imports in development only."""
    on_disk = set()
    for package, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base)
            on_disk.add(".".join([package, *relative.parts]))
    missing = sorted(on_disk - set(PACKAGES))
    assert missing == [], f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"
    assert set(BUILTIN_PLUGINS) <= {m for m in _all_module_names()}


def _all_module_names() -> set[str]:
    names = set()
    for package, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join([package, *parts]))
    return names


@pytest.mark.integration
@pytest.mark.slow
def test_wheel_installs_and_imports_every_builtin(tmp_path: Path) -> None:
    missing = [m for m in ("pip", "setuptools", "wheel") if importlib.util.find_spec(m) is None]
    if missing:  # pragma: no cover - depends on the environment
        pytest.skip(f"{', '.join(missing)} needed to build the wheel")
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=_IGNORE)  # never write build files into the work tree
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(dist), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = dist.glob("bkcore-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "bkcore/py.typed" in names
    assert not [n for n in names if n.startswith(("core/", "tests/", "sources/"))]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    # Dependencies (pluggy, grpclib, ...) come from this interpreter's site-packages as plain
    # path entries: their .pth files (the editable bkcore) are NOT processed, so bkcore can
    # only come from the wheel.
    deps = [d for d in site.getsitepackages() if os.path.isdir(d)]
    (purelib / "_kernel_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip

    modules = sorted({*BUILTIN_PLUGINS, *PACKAGES})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [python, "-c", PROBE, *modules],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
        env=env,
    )
    found: dict[str, str] = json.loads(probe.stdout)
    outside = {m: f for m, f in found.items() if not f.startswith(str(purelib / "bkcore"))}
    assert outside == {}, "not imported from the installed wheel"

    script = venv / "bin" / "bkcore"
    listing = subprocess.run(
        [script, "plugins", "--format", "json"], capture_output=True, text=True, cwd="/", env=env
    )
    assert listing.returncode == 0, listing.stderr
    loaded = [p["name"] for p in json.loads(listing.stdout)["plugins"]]
    assert loaded[: len(BUILTIN_PLUGINS)] == list(BUILTIN_PLUGINS)
    helped = subprocess.run([script, "--help"], capture_output=True, text=True, cwd="/", env=env)
    assert helped.returncode == 0 and "plugins" in helped.stdout

    # the wheel's own entry points of group bkcore all name built-in modules
    eps = subprocess.run(
        [python, "-c", "from importlib.metadata import distribution as d; "
         "print('\\n'.join(e.value for e in d('bkcore').entry_points if e.group == 'bkcore'))"],
        capture_output=True, text=True, check=True, cwd="/", env=env,
    ).stdout.split()  # fmt: skip
    assert eps and set(eps) <= set(BUILTIN_PLUGINS)
