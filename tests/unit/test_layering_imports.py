"""The dependency direction of ARCHITECTURE.md §1, checked on the source with ``ast``.

* ``core/`` (``bkcore``) never imports a plugin folder (``bkcore.sources``, ``.frontends``,
  ``.workers``, ``.sessions``, ``.plugins``), except under ``if TYPE_CHECKING:``. Built-ins
  named by string (``BUILTIN_PLUGINS``, registry targets) are not imports and are allowed.
* A plugin folder (``sources/local/``, ``plugins/exporters/``, ...) imports public ``bkcore``
  modules and its own modules, never another plugin folder's.

Static imports, relative imports and ``importlib.import_module``/``__import__`` calls with a
literal name all count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ("sources", "frontends", "workers", "sessions", "plugins")


@dataclass(frozen=True)
class Imported:
    line: int
    module: str  # absolute dotted name (for ``from X import y``: ``X.y``)
    type_checking: bool


def module_name(rel: Path) -> tuple[str, bool]:
    """``core/a/b.py`` -> (``bkcore.a.b``, False); ``sessions/x/__init__.py`` -> package."""
    parts = list(rel.with_suffix("").parts)
    top = parts.pop(0)
    prefix = ["bkcore"] if top == "core" else ["bkcore", top]
    is_package = bool(parts) and parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(prefix + parts), is_package


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _resolve(module: str | None, level: int, name: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    base = name.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_in(source: str, name: str, is_package: bool) -> list[Imported]:
    """Every module ``source`` (the module ``name``) imports, with where and how."""
    out: list[Imported] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            out.extend(Imported(node.lineno, a.name, guarded) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, name, is_package)
            out.append(Imported(node.lineno, base, guarded))
            # ``from bkcore import sessions`` imports the package ``bkcore.sessions``
            out.extend(Imported(node.lineno, f"{base}.{a.name}", guarded) for a in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if (
                fname in ("import_module", "__import__")
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
            ):
                out.append(Imported(node.lineno, arg.value, guarded))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source), False)
    return out


def folder_of(module: str) -> tuple[str, str | None] | None:
    """``(family, folder)`` of a plugin-folder module, None for a core module."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "bkcore" or parts[1] not in FAMILIES:
        return None
    return parts[1], parts[2] if len(parts) > 2 else None


def core_violations(imports: list[Imported]) -> list[Imported]:
    return [i for i in imports if not i.type_checking and folder_of(i.module) is not None]


def plugin_violations(own: tuple[str, str | None], imports: list[Imported]) -> list[Imported]:
    out = []
    for i in imports:
        target = folder_of(i.module)
        if target is not None and target != own:
            out.append(i)
    return out


def python_files(top: str) -> Iterator[Path]:
    for path in sorted((REPO / top).rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


def _show(path: Path, found: list[Imported]) -> list[str]:
    rel = path.relative_to(REPO)
    return [f"{rel}:{i.line} imports {i.module}" for i in found]


# -- the repository ------------------------------------------------------------------------


def test_core_never_imports_a_plugin_folder() -> None:
    files = list(python_files("core"))
    assert len(files) > 40  # the scan really covers the core
    bad: list[str] = []
    for path in files:
        name, pkg = module_name(path.relative_to(REPO))
        bad += _show(path, core_violations(imports_in(path.read_text(), name, pkg)))
    assert bad == []


@pytest.mark.parametrize("family", FAMILIES)
def test_plugin_folders_import_only_core_and_themselves(family: str) -> None:
    files = list(python_files(family))
    assert files, f"{family}/ holds no modules"
    bad: list[str] = []
    for path in files:
        rel = path.relative_to(REPO)
        name, pkg = module_name(rel)
        # sources/local/x.py belongs to (sources, local); sources/__init__.py to (sources, None)
        own = (family, rel.parts[1] if len(rel.parts) > 2 else None)
        bad += _show(path, plugin_violations(own, imports_in(path.read_text(), name, pkg)))
    assert bad == []


def test_builtin_plugins_are_named_by_string_only() -> None:
    """The exemptions are real: core names built-ins in strings, and the scan skips them."""
    text = (REPO / "core" / "pluginmanager.py").read_text()
    assert '"bkcore.sessions.filesync.plugin"' in text
    imports = imports_in(text, "bkcore.pluginmanager", False)
    assert core_violations(imports) == []


# -- the checker itself ----------------------------------------------------------------------


def _core(source: str, name: str = "bkcore.ops.x", pkg: bool = False) -> list[str]:
    return [i.module for i in core_violations(imports_in(source, name, pkg))]


def test_checker_flags_each_way_core_can_reach_a_plugin() -> None:
    assert _core("import bkcore.sessions.secrets\n") == ["bkcore.sessions.secrets"]
    assert _core("from bkcore.sources.local import source\n") == [
        "bkcore.sources.local",
        "bkcore.sources.local.source",
    ]
    assert _core("from bkcore import workers\n") == ["bkcore.workers"]
    assert _core("def f():\n    from bkcore.plugins.exporters import tar\n")  # lazy import
    assert _core("import importlib\nimportlib.import_module('bkcore.frontends.x')\n") == [
        "bkcore.frontends.x"
    ]
    assert _core("__import__('bkcore.sessions')\n") == ["bkcore.sessions"]
    # relative: bkcore.session.filesync.sync -> bkcore.sessions
    assert _core("from ... import sessions\n", "bkcore.session.filesync.sync") == [
        "bkcore.sessions"
    ]
    assert _core("from .. import sessions\n", "bkcore.session", pkg=True) == ["bkcore.sessions"]
    assert _core("from .. import sessions\n", "bkcore.session.filesync", pkg=True) == []


def test_checker_allows_core_imports_type_checking_and_strings() -> None:
    ok = (
        "from typing import TYPE_CHECKING\n"
        "import typing\n"
        "from bkcore.session.secrets import get_secret\n"
        "from bkcore import errors\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from bkcore.sources.local.source import LocalSource\n"
        "if typing.TYPE_CHECKING:\n"
        "    import bkcore.workers.runc\n"
        "BUILTIN = ('bkcore.sessions.filesync.plugin',)\n"
        "registry.add('x', 'bkcore.sessions.secrets.provider:SecretsProvider')\n"
    )
    assert _core(ok) == []
    # only the guarded branch is exempt
    guarded_else = "if TYPE_CHECKING:\n    pass\nelse:\n    import bkcore.sessions\n"
    assert _core(guarded_else) == ["bkcore.sessions"]


def test_checker_flags_plugin_folders_reaching_into_each_other() -> None:
    def bad(source: str, own: tuple[str, str | None], name: str) -> list[str]:
        return [i.module for i in plugin_violations(own, imports_in(source, name, False))]

    local = ("sources", "local")
    name = "bkcore.sources.local.source"
    assert bad("from bkcore.sessions.filesync import sync_dir\n", local, name) == [
        "bkcore.sessions.filesync",
        "bkcore.sessions.filesync.sync_dir",
    ]
    assert bad("from bkcore.sources.git import source\n", local, name) == [
        "bkcore.sources.git",
        "bkcore.sources.git.source",
    ]
    assert bad("if TYPE_CHECKING:\n    import bkcore.plugins.exporters\n", local, name) == [
        "bkcore.plugins.exporters"
    ]
    fine = (
        "from bkcore.sources.local.source import parse\n"
        "from . import plugin\n"
        "from bkcore.session.filesync import sync_dir\n"
        "from bkcore.errors import SourceError\n"
    )
    assert bad(fine, local, name) == []
