"""BkPluginManager: load order, refusals (async, unknown hooks, conflicts), import errors."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint, distributions
from pathlib import Path
from typing import Any

import pytest

from bkcore.errors import PluginConflictError, PluginError
from bkcore.hookspecs import FAMILIES, hookimpl
from bkcore.pluginmanager import (
    BUILTIN_PLUGINS,
    ORIGIN_BUILTIN,
    ORIGIN_CLI,
    ORIGIN_ENTRY_POINT,
    BkPluginManager,
    get_plugin_manager,
    reset_plugin_managers,
    split_modules,
)
from bkcore.registry import Registry


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    reset_plugin_managers()
    yield
    reset_plugin_managers()
    for name in [n for n in sys.modules if n.startswith("kernel_pm_")]:
        del sys.modules[name]


def write_dist(
    site: Path,
    dist: str,
    version: str,
    modules: dict[str, str],
    entry_points: dict[str, str] | None = None,
) -> None:
    """A real installed distribution (dist-info + modules) in directory ``site``."""
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text("\n".join(modules) + "\n")
    if entry_points:
        lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[bkcore]\n{lines}")


def entry_points_in(site: Path) -> list[EntryPoint]:
    return [
        ep for d in distributions(path=[str(site)]) for ep in d.entry_points.select(group="bkcore")
    ]


class SourcesA:
    @hookimpl
    def bkcore_register_sources(self, registry: Registry) -> None:
        registry.add("example", "json:dumps", description="from A")


class SourcesB:
    @hookimpl
    def bkcore_register_sources(self, registry: Registry) -> None:
        registry.add("example", "json:loads")


class SourcesReplacing:
    @hookimpl
    def bkcore_register_sources(self, registry: Registry) -> None:
        registry.add("example", "json:loads", replace=True)


def test_every_family_has_a_registration_hook() -> None:
    manager = BkPluginManager()
    for family in FAMILIES:
        caller = getattr(manager.hook, f"bkcore_register_{family}")
        assert caller.has_spec()
        assert manager.registry(family).family == family
    assert manager.hook.bkcore_select_worker.has_spec()
    with pytest.raises(PluginError, match="unknown plugin family 'nope'"):
        manager.registry("nope")


def test_conflict_between_two_plugins_names_both() -> None:
    manager = BkPluginManager()
    manager.register(SourcesA(), "plugin-a")
    manager.register(SourcesB(), "plugin-b")
    with pytest.raises(PluginConflictError) as info:
        manager.registry("sources")
    assert "plugin-a" in str(info.value) and "plugin-b" in str(info.value)
    assert "'example'" in str(info.value)


def test_explicit_replace_is_recorded() -> None:
    manager = BkPluginManager()
    manager.register(SourcesA(), "plugin-a")
    manager.register(SourcesReplacing(), "plugin-r")
    entry = manager.registry("sources").get("example")
    assert entry is not None and entry.plugin == "plugin-r"
    assert entry.replaces is not None and entry.replaces.plugin == "plugin-a"


def test_plugin_registered_after_the_registry_is_built_still_registers() -> None:
    manager = BkPluginManager()
    registry = manager.registry("sources")
    assert registry.keys() == []
    manager.register(SourcesA(), "late")
    assert manager.registry("sources") is registry
    assert registry.keys() == ["example"]
    manager.registry("exporters")
    with pytest.raises(PluginConflictError):
        manager.register(SourcesAndExporter(), "later")
    assert manager.get_plugin("later") is None  # rolled back: not half registered
    assert manager.registry("exporters").keys() == []
    assert registry.get("example").plugin == "late"  # type: ignore[union-attr]


class SourcesAndExporter:
    @hookimpl
    def bkcore_register_exporters(self, registry: Registry) -> None:
        registry.add("tar", "json:dumps")

    @hookimpl
    def bkcore_register_sources(self, registry: Registry) -> None:
        registry.add("example", "json:loads")


class AsyncHook:
    @hookimpl
    async def bkcore_register_sources(self, registry: Registry) -> None:
        registry.add("x", "json:dumps")


class AsyncGenHook:
    @hookimpl
    async def bkcore_register_workers(self, registry: Registry) -> Any:
        yield None


@pytest.mark.parametrize(
    ("plugin", "hook"),
    [(AsyncHook(), "bkcore_register_sources"), (AsyncGenHook(), "bkcore_register_workers")],
)
def test_async_hook_is_refused_at_registration(plugin: object, hook: str) -> None:
    manager = BkPluginManager()
    with pytest.raises(PluginError) as info:
        manager.register(plugin, "async-plugin")
    assert "async-plugin" in str(info.value) and hook in str(info.value)
    assert "async" in str(info.value)
    assert not manager.is_registered(plugin)
    assert manager.get_plugin("async-plugin") is None


class UnknownHook:
    @hookimpl
    def bkcore_register_gadgets(self, registry: Registry) -> None:
        pass


class OptionalUnknownHook:
    @hookimpl(optionalhook=True)
    def bkcore_future_hook(self) -> None:
        pass


class BadSignature:
    @hookimpl
    def bkcore_register_sources(self, registry: Registry, extra: int) -> None:
        pass


def test_unknown_hook_is_refused_unless_optional() -> None:
    manager = BkPluginManager()
    with pytest.raises(PluginError, match=r"'gadgets'.*unknown hook bkcore_register_gadgets"):
        manager.register(UnknownHook(), "gadgets")
    assert manager.get_plugin("gadgets") is None
    assert manager.register(OptionalUnknownHook(), "optional") == "optional"


def test_hook_with_wrong_arguments_is_refused_and_not_left_half_registered() -> None:
    manager = BkPluginManager()
    with pytest.raises(PluginError, match=r"'bad'.*invalid hook"):
        manager.register(BadSignature(), "bad")
    assert manager.get_plugin("bad") is None
    assert manager.registry("sources").keys() == []


class Raising:
    @hookimpl
    def bkcore_register_sources(self, registry: Registry) -> None:
        raise RuntimeError("boom")


def test_exception_in_registration_hook_names_the_plugin() -> None:
    manager = BkPluginManager()
    manager.register(Raising(), "raiser")
    with pytest.raises(PluginError, match=r"'raiser' failed in bkcore_register_sources.*boom"):
        manager.registry("sources")


def test_builtins_are_loaded_by_module_path() -> None:
    manager = BkPluginManager()
    manager.load_builtins()
    names = [name for name, _ in manager.list_name_plugin()]
    assert names == list(BUILTIN_PLUGINS)
    info = {i.name: i for i in manager.plugins()}["bkcore.cli.plugin"]
    assert info.origin == ORIGIN_BUILTIN
    assert info.distribution is not None and info.distribution.startswith("bkcore ")
    assert {e.key for e in info.registered["commands"]} >= {"plugins", "debug dump-llb"}


PLUGIN_SOURCE = """
from bkcore.hookspecs import hookimpl

@hookimpl
def bkcore_register_sources(registry):
    registry.add("example", "json:dumps", description="example scheme")

@hookimpl
def bkcore_register_commands(registry):
    registry.add("hello", "json", description="say hello")
"""


def test_entry_points_load_with_their_distribution(tmp_path: Path) -> None:
    write_dist(
        tmp_path, "kernel-pm-example", "1.2", {"kernel_pm_example": PLUGIN_SOURCE},
        {"example": "kernel_pm_example"},
    )  # fmt: skip
    sys.path.insert(0, str(tmp_path))
    try:
        manager = BkPluginManager()
        manager.load_entry_points(entry_points_in(tmp_path))
    finally:
        sys.path.remove(str(tmp_path))
    (info,) = manager.plugins()
    assert (info.name, info.origin) == ("example", ORIGIN_ENTRY_POINT)
    assert info.distribution == "kernel-pm-example 1.2"
    assert info.module == "kernel_pm_example"
    assert [e.key for e in info.registered["sources"]] == ["example"]
    assert [e.key for e in info.registered["commands"]] == ["hello"]
    entry = manager.registry("sources").get("example")
    assert entry is not None and entry.distribution == "kernel-pm-example 1.2"


def test_entry_point_import_failure_names_the_distribution(tmp_path: Path) -> None:
    write_dist(
        tmp_path, "kernel-pm-broken", "0.3",
        {"kernel_pm_broken": "import kernel_pm_not_installed\n"},
        {"broken": "kernel_pm_broken"},
    )  # fmt: skip
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(PluginError) as info:
            BkPluginManager().load_entry_points(entry_points_in(tmp_path))
    finally:
        sys.path.remove(str(tmp_path))
    message = str(info.value)
    assert "'broken'" in message and "kernel-pm-broken 0.3" in message
    assert "kernel_pm_not_installed" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_two_distributions_claiming_one_scheme_name_both(tmp_path: Path) -> None:
    write_dist(
        tmp_path, "kernel-pm-one", "1.0", {"kernel_pm_one": PLUGIN_SOURCE}, {"one": "kernel_pm_one"}
    )
    write_dist(
        tmp_path, "kernel-pm-two", "2.0", {"kernel_pm_two": PLUGIN_SOURCE}, {"two": "kernel_pm_two"}
    )
    sys.path.insert(0, str(tmp_path))
    try:
        manager = BkPluginManager()
        manager.load_entry_points(entry_points_in(tmp_path))
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(PluginConflictError) as info:
        manager.registry("sources")
    message = str(info.value)
    assert "kernel-pm-one 1.0" in message and "kernel-pm-two 2.0" in message


def test_get_plugin_manager_discovers_installed_entry_points_and_extras(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dist(
        tmp_path, "kernel-pm-found", "4.5", {"kernel_pm_found": PLUGIN_SOURCE},
        {"found": "kernel_pm_found"},
    )  # fmt: skip
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "kernel_pm_extra.py").write_text(
        "from bkcore.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def bkcore_register_exporters(registry):\n"
        "    registry.add('extra', 'json:dumps')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(extra))
    manager = get_plugin_manager(["kernel_pm_extra"])
    names = [(i.name, i.origin, i.distribution) for i in manager.plugins()]
    assert names[: len(BUILTIN_PLUGINS)] == [
        (name, ORIGIN_BUILTIN, names[0][2]) for name in BUILTIN_PLUGINS
    ]
    assert ("found", ORIGIN_ENTRY_POINT, "kernel-pm-found 4.5") in names
    assert names[-1] == ("kernel_pm_extra", ORIGIN_CLI, None)
    assert get_plugin_manager(["kernel_pm_extra"]) is manager  # cached per set of extras
    assert get_plugin_manager() is not manager
    assert "kernel_pm_extra" not in [n for n, _ in get_plugin_manager().list_name_plugin()]


def test_cli_module_import_failure_names_its_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dist(
        tmp_path, "kernel-pm-bad", "0.1", {"kernel_pm_bad": "raise ImportError('no libfoo')\n"}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        BkPluginManager().load_module("kernel_pm_bad")
    message = str(info.value)
    assert "'kernel_pm_bad'" in message and "kernel-pm-bad 0.1" in message
    assert "no libfoo" in message


def test_cli_module_not_found_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PluginError) as info:
        BkPluginManager().load_module("kernel_pm_nowhere")
    assert str(info.value) == (
        "plugin module 'kernel_pm_nowhere' not found (no installed distribution)"
    )
    pkg = tmp_path / "kernel_pm_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    write_dist(tmp_path, "kernel-pm-pkg", "7.0", {})
    (tmp_path / "kernel_pm_pkg-7.0.dist-info" / "top_level.txt").write_text("kernel_pm_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_plugin_managers()  # forget the cached module -> distribution map
    with pytest.raises(PluginError) as info:
        BkPluginManager().load_module("kernel_pm_pkg.plugin")
    assert str(info.value) == (
        "plugin module 'kernel_pm_pkg.plugin' not found in distribution 'kernel-pm-pkg 7.0'"
    )


def test_same_module_twice_is_loaded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kernel_pm_twice.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = get_plugin_manager(["kernel_pm_twice,kernel_pm_twice", "kernel_pm_twice"])
    # Loaded once: no conflict with itself, one entry (beside the built-in sources).
    assert manager.registry("sources").keys().count("example") == 1
    assert [p.module for p in manager.plugins()].count("kernel_pm_twice") == 1


def test_plugin_name_clash_between_distinct_plugins_is_an_error() -> None:
    manager = BkPluginManager()
    manager.register(SourcesA(), "same")
    with pytest.raises(PluginError, match=r"'same'.*already used"):
        manager.register(SourcesB(), "same")


def test_split_modules() -> None:
    assert split_modules(["a,b", "c", " a ,", ""]) == ("a", "b", "c")


class PickSecond:
    @hookimpl
    def bkcore_select_worker(self, vertex_platform: str | None, workers: list[Any]) -> Any:
        return workers[1] if vertex_platform == "linux/arm64" else None


class PickNothing:
    @hookimpl
    def bkcore_select_worker(self, vertex_platform: str | None, workers: list[Any]) -> Any:
        return None


def test_select_worker_is_firstresult() -> None:
    manager = BkPluginManager()
    assert manager.select_worker("linux/arm64", ["w1", "w2"]) is None
    manager.register(PickSecond(), "pick")
    manager.register(PickNothing(), "nothing")
    assert manager.select_worker("linux/arm64", ["w1", "w2"]) == "w2"
    assert manager.select_worker("linux/amd64", ["w1", "w2"]) is None


class Unmarked:
    def bkcore_register_sources(self, registry: Registry) -> None:
        registry.add("silently-ignored", "json:dumps")


def test_hook_function_without_marker_is_refused() -> None:
    manager = BkPluginManager()
    with pytest.raises(PluginError, match=r"'forgot'.*bkcore_register_sources is not marked"):
        manager.register(Unmarked(), "forgot")
    assert manager.get_plugin("forgot") is None


def test_failed_late_registration_rolls_back_every_registry() -> None:
    manager = BkPluginManager()
    exporters = manager.registry("exporters")  # built (and so called) before sources
    manager.registry("sources")
    manager.register(SourcesA(), "first")
    with pytest.raises(PluginConflictError):
        manager.register(SourcesAndExporter(), "second")
    assert exporters.keys() == []
    assert manager.get_plugin("second") is None
    assert manager.registry("sources").get("example").plugin == "first"  # type: ignore[union-attr]
