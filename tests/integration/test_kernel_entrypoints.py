"""Third-party plugin packages installed with pip are loaded through the ``bkcore`` entry
point group; the same module works with ``--plugin``; conflicts, async hooks and import
failures each give one clear error line naming the distribution(s)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

_MISSING = [m for m in ("pip", "setuptools") if importlib.util.find_spec(m) is None]
if _MISSING:  # pragma: no cover - depends on the environment
    pytest.skip(f"{' and '.join(_MISSING)} needed to build test plugins", allow_module_level=True)


def make_venv(where: Path) -> Path:
    """A fresh venv that sees this interpreter's site-packages (and so the bkcore under test)
    after its own, without needing network access; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in dirs if os.path.isdir(d))
    (Path(purelib) / "_kernel_runner_site.pth").write_text(lines)
    return python


def write_package(root: Path, dist: str, version: str, package: str, files: dict[str, str]) -> Path:
    """A source tree of one distribution providing ``package`` and entry point ``package``."""
    src = root / dist
    (src / package).mkdir(parents=True)
    (src / package / "__init__.py").write_text("")
    for name, text in files.items():
        (src / package / name).write_text(textwrap.dedent(text))
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "{version}"

            [project.entry-points.bkcore]
            {package} = "{package}.plugin"

            [tool.setuptools]
            packages = ["{package}"]
            """
        )
    )
    return src


def pip_install(python: Path, *sources: Path) -> None:
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--ignore-installed", *map(str, sources)],
        check=True,
        capture_output=True,
    )  # fmt: skip


def bkcore(python: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "bkcore.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd="/",
    )


EXAMPLE_PLUGIN = """
from bkcore.hookspecs import hookimpl


@hookimpl
def bkcore_register_sources(registry):
    registry.add("example", "bkexample.source:ExampleSource", description="example:// ids")


@hookimpl
def bkcore_register_commands(registry):
    registry.add("hello", "bkexample.hello", description="say hello from a plugin")
"""

EXAMPLE_HELLO = """
def add_arguments(parser):
    parser.add_argument("--to", default="world")


def run(args):
    print(f"hello {args.to} from bkexample")
    return 0
"""

EXAMPLE_SOURCE = """
class ExampleSource:
    schemes = ("example",)
"""


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A venv with bkcore-example-plugin installed; returns (python, package source dir)."""
    root = tmp_path_factory.mktemp("kernel_ep")
    src = write_package(
        root,
        "bkcore-example-plugin",
        "1.0",
        "bkexample",
        {"plugin.py": EXAMPLE_PLUGIN, "hello.py": EXAMPLE_HELLO, "source.py": EXAMPLE_SOURCE},
    )
    python = make_venv(root / "venv")
    pip_install(python, src)
    return python, src


def test_installed_plugin_is_loaded_through_its_entry_point(example: tuple[Path, Path]) -> None:
    python, _ = example
    result = bkcore(python, "plugins", "--format", "json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    plugin = plugins["bkexample"]
    assert plugin["origin"] == "entry point"
    assert plugin["distribution"] == "bkcore-example-plugin 1.0"
    assert plugin["module"] == "bkexample.plugin"
    assert plugin["registered"]["sources"][0]["key"] == "example"
    assert plugin["registered"]["commands"][0]["key"] == "hello"
    assert plugins["bkcore.cli.plugin"]["origin"] == "builtin"

    text = bkcore(python, "plugins")
    assert "bkexample (entry point, bkcore-example-plugin 1.0)\n  sources: example\n" in text.stdout

    hello = bkcore(python, "hello", "--to", "ada")
    assert (hello.returncode, hello.stdout) == (0, "hello ada from bkexample\n")
    assert "say hello from a plugin" in bkcore(python, "--help").stdout


def test_same_module_with_plugin_option_for_one_invocation(
    tmp_path: Path, example: tuple[Path, Path]
) -> None:
    _, src = example
    shutil.copytree(src / "bkexample", tmp_path / "bkexample")  # the module, no metadata
    python = Path(sys.executable)  # bkexample is not installed here, only on PYTHONPATH
    env = {"PYTHONPATH": str(tmp_path)}
    assert bkcore(python, "hello", **env).returncode == 2  # not loaded without --plugin
    hello = bkcore(python, "hello", "--plugin", "bkexample.plugin", "--to", "bob", **env)
    assert (hello.returncode, hello.stdout) == (0, "hello bob from bkexample\n")
    listed = bkcore(python, "--plugin=bkexample.plugin", "plugins", "--format", "json", **env)
    plugin = json.loads(listed.stdout)["plugins"][-1]
    assert (plugin["name"], plugin["origin"]) == ("bkexample.plugin", "--plugin")
    assert plugin["registered"]["sources"][0]["target"] == "bkexample.source:ExampleSource"


def test_two_distributions_claiming_one_scheme(tmp_path: Path, example: tuple[Path, Path]) -> None:
    _, example_src = example
    clash = write_package(
        tmp_path,
        "bkcore-clash-plugin",
        "2.0",
        "bkclash",
        {
            "plugin.py": """
            from bkcore.hookspecs import hookimpl

            @hookimpl
            def bkcore_register_sources(registry):
                registry.add("example", "bkclash:Other")
            """
        },
    )
    python = make_venv(tmp_path / "venv")
    pip_install(python, example_src, clash)
    result = bkcore(python, "plugins")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: sources 'example'")
    assert "bkcore-example-plugin 1.0" in result.stderr
    assert "bkcore-clash-plugin 2.0" in result.stderr


def test_async_hook_is_refused(tmp_path: Path) -> None:
    src = write_package(
        tmp_path,
        "bkcore-async-plugin",
        "0.5",
        "bkasync",
        {
            "plugin.py": """
            from bkcore.hookspecs import hookimpl

            @hookimpl
            async def bkcore_register_exporters(registry):
                registry.add("slow", "bkasync:Slow")
            """
        },
    )
    python = make_venv(tmp_path / "venv")
    pip_install(python, src)
    result = bkcore(python, "plugins")
    assert result.returncode == 1
    assert result.stderr == (
        "error: plugin 'bkasync' (distribution 'bkcore-async-plugin 0.5'): hook "
        "bkcore_register_exporters is async; bkcore hooks must be synchronous "
        "(return an object whose methods are async instead)\n"
    )


def test_import_failure_names_the_distribution(tmp_path: Path) -> None:
    src = write_package(
        tmp_path,
        "bkcore-broken-plugin",
        "0.3",
        "bkbroken",
        {"plugin.py": "import bkbroken_missing_dependency\n"},
    )
    python = make_venv(tmp_path / "venv")
    pip_install(python, src)
    result = bkcore(python, "--help")
    assert result.returncode == 1
    assert result.stderr == (
        "error: plugin 'bkbroken' (bkbroken.plugin) from distribution "
        "'bkcore-broken-plugin 0.3' failed to import: ModuleNotFoundError: "
        "No module named 'bkbroken_missing_dependency'\n"
    )
    debug = bkcore(python, "--debug", "plugins")
    assert "Traceback" in debug.stderr and "bkbroken_missing_dependency" in debug.stderr
    # the same module through --plugin also names its distribution
    cli = bkcore(python, "--plugin", "bkbroken.plugin", "plugins", BKCORE_ROOT=str(tmp_path))
    assert cli.returncode == 1 and "bkcore-broken-plugin 0.3" in cli.stderr
