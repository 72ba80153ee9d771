"""Plugin registration at start-up: module plugins are scanned without a static lookup of
every name (pluggy's inspect.getattr_static costs ~50 us a name), with the same result."""

from __future__ import annotations

import inspect
import types
from typing import Any

import pluggy
import pytest

from bkcore.hookspecs import hookimpl
from bkcore.pluginmanager import BkPluginManager


def plugin_module() -> types.ModuleType:
    module = types.ModuleType("startup_probe_plugin")
    for index in range(50):  # constants, classes, imported modules: never hooks
        setattr(module, f"CONSTANT_{index}", index)
    module.Helper = type("Helper", (), {})  # type: ignore[attr-defined]
    module.inspect = inspect  # type: ignore[attr-defined]

    @hookimpl
    def bkcore_register_sources(registry: Any) -> None:
        registry.add("probe", "startup_probe_plugin:Source", schemes=("probe",))

    module.bkcore_register_sources = bkcore_register_sources  # type: ignore[attr-defined]
    return module


def count_static_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    real = inspect.getattr_static

    def counting(obj: object, attr: str, *default: Any) -> Any:
        names.append(attr)
        return real(obj, attr, *default)

    monkeypatch.setattr(inspect, "getattr_static", counting)
    return names


def test_module_plugin_scan_looks_up_only_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = BkPluginManager()
    module = plugin_module()
    looked_up = count_static_lookups(monkeypatch)
    manager.register(module, "probe")
    assert "CONSTANT_0" not in looked_up and "Helper" not in looked_up
    assert set(looked_up) <= {"bkcore_register_sources"}
    # ... and the hook is registered as before.
    impls = manager.hook.bkcore_register_sources.get_hookimpls()
    assert [impl.plugin_name for impl in impls if impl.plugin is module] == ["probe"]


def test_same_answers_as_pluggy_for_builtin_plugins_and_hookspecs() -> None:
    from bkcore.hookspecs import FAMILIES
    from bkcore.pluginmanager import BUILTIN_PLUGINS

    ours = BkPluginManager()
    plain = pluggy.PluginManager("bkcore")
    for path in BUILTIN_PLUGINS:
        module = __import__(path, fromlist=["_"])
        for name in dir(module):
            assert ours.parse_hookimpl_opts(module, name) == plain.parse_hookimpl_opts(
                module, name
            ), (path, name)
    for path in FAMILIES.values():
        module = __import__(path, fromlist=["_"])
        for name in dir(module):
            assert ours.parse_hookspec_opts(module, name) == plain.parse_hookspec_opts(
                module, name
            ), (path, name)
