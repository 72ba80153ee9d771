"""Registry: lazy targets, ownership, conflicts, explicit replacement, import errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bkcore.errors import PluginConflictError, PluginError
from bkcore.registry import UNKNOWN_PLUGIN, Registry


def test_add_records_owner_and_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "kernel_lazy_target.py"
    pkg.write_text("LOADED = True\nclass Thing:\n    value = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("sources")
    with registry.registering_as("my-plugin", "my-dist 1.0"):
        entry = registry.add("example", "kernel_lazy_target:Thing", description="an example")
    assert "kernel_lazy_target" not in sys.modules  # add() never imports
    assert entry.plugin == "my-plugin"
    assert entry.distribution == "my-dist 1.0"
    assert entry.family == "sources"
    assert entry.description == "an example"
    assert registry.get("example") == entry
    assert registry.keys() == ["example"]
    assert registry.entries() == [entry]
    assert "example" in registry and len(registry) == 1
    thing = registry.load("example")
    assert thing.value == 42
    assert registry.load("example") is thing
    monkeypatch.delitem(sys.modules, "kernel_lazy_target")


def test_add_outside_a_plugin_is_attributed_to_direct() -> None:
    registry = Registry("frontends")
    assert registry.add("x", "json:dumps").plugin == UNKNOWN_PLUGIN


def test_conflict_names_both_plugins_and_distributions() -> None:
    registry = Registry("sources")
    with registry.registering_as("first-plugin", "first-dist 1.0"):
        registry.add("example", "json:dumps")
    with (
        registry.registering_as("second-plugin", "second-dist 2.0"),
        pytest.raises(PluginConflictError) as info,
    ):
        registry.add("example", "json:loads")
    message = str(info.value)
    assert "first-plugin" in message and "first-dist 1.0" in message
    assert "second-plugin" in message and "second-dist 2.0" in message
    assert "example" in message and "sources" in message
    assert info.value.family == "sources" and info.value.key == "example"
    assert registry.get("example") is not None
    assert registry.get("example").target == "json:dumps"  # type: ignore[union-attr]


def test_replace_is_explicit_and_recorded() -> None:
    import json

    registry = Registry("exporters")
    with registry.registering_as("builtin", "bkcore 0.1.0"):
        original = registry.add("image", "json:dumps")
    assert registry.load("image") is json.dumps
    with registry.registering_as("better", "better-dist 1.0"):
        replacement = registry.add("image", "json:loads", replace=True)
    assert replacement.replaces == original
    assert replacement.replaces is not None and replacement.replaces.plugin == "builtin"
    assert registry.load("image") is json.loads  # the cached object was dropped
    assert registry.keys() == ["image"]


@pytest.mark.parametrize("target", ["", "no spaces", "mod:", ":attr", "a..b:c", "mod:a:b", "1mod"])
def test_malformed_target_is_refused(target: str) -> None:
    registry = Registry("workers")
    with registry.registering_as("p", None), pytest.raises(PluginError, match="invalid target"):
        registry.add("runc", target)
    assert registry.keys() == []


@pytest.mark.parametrize("key", ["", " ", " padded"])
def test_invalid_key_is_refused(key: str) -> None:
    with pytest.raises(PluginError, match="invalid workers key"):
        Registry("workers").add(key, "json:dumps")


def test_load_import_failure_names_plugin_and_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kernel_broken_target.py").write_text("import kernel_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("sources")
    with registry.registering_as("broken-plugin", "broken-dist 0.3"):
        registry.add("broken", "kernel_broken_target:Source")
    with pytest.raises(PluginError) as info:
        registry.load("broken")
    message = str(info.value)
    assert "broken-plugin" in message and "broken-dist 0.3" in message
    assert "kernel_missing_dependency" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_load_missing_attribute_and_unknown_key() -> None:
    registry = Registry("sources")
    registry.add("json", "json:no_such_thing")
    with pytest.raises(PluginError, match="no_such_thing"):
        registry.load("json")
    with pytest.raises(PluginError, match=r"no sources registered as 'git' \(known: json\)"):
        registry.load("git")


def test_module_target_without_attribute_loads_the_module() -> None:
    import json

    registry = Registry("commands")
    registry.add("dump", "json")
    assert registry.load("dump") is json
