"""Loading plugins, refusing bad ones, and the typed facade over pluggy.

Plugins are loaded in one order, all through :meth:`BkPluginManager.load_module` /
:meth:`BkPluginManager.register`: the built-in modules in :data:`BUILTIN_PLUGINS`, then
the entry points of group ``bkcore`` (third-party distributions), then ``--plugin``
modules. Registration refuses async hook implementations and hooks nobody specified; an
import failure names the module and the distribution that provides it.
"""

from __future__ import annotations

import importlib
import inspect
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import pluggy

from bkcore.errors import BkError, PluginError
from bkcore.hookspecs import FAMILIES, PROJECT, register_hook_name
from bkcore.registry import Entry, Registry, describe_plugin

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from bkcore.entrypoints import FoundEntryPoint

#: Module paths of the built-in plugin modules, loaded first, in this order. Each module
#: holds only hook implementations (cheap to import). Append yours here.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "bkcore.cli.plugin",
    "bkcore.workers.runc.plugin",
    "bkcore.plugins.progress.plugin",
    "bkcore.sources.local.plugin",
    "bkcore.sources.git.plugin",
    "bkcore.sources.image.plugin",
    "bkcore.sources.http.plugin",
    "bkcore.sources.oci_layout.plugin",
    "bkcore.plugins.exporters.plugin",
    "bkcore.frontends.dockerfile.plugin",
    "bkcore.sessions.filesync.plugin",
    "bkcore.sessions.secrets.plugin",
    "bkcore.sessions.sshforward.plugin",
    "bkcore.sessions.auth.plugin",
)

#: Entry-point group third-party distributions use to provide plugins.
ENTRY_POINT_GROUP = "bkcore"

ORIGIN_BUILTIN = "builtin"
ORIGIN_ENTRY_POINT = "entry point"
ORIGIN_CLI = "--plugin"
ORIGIN_DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One loaded plugin and everything it registered, per family.

    ``registered`` holds every entry the plugin added, including ones another plugin later
    replaced (``replace=True``); ``replaced_by[(family, key)]`` names that other plugin.
    """

    name: str
    module: str
    origin: str
    distribution: str | None
    hooks: tuple[str, ...]
    registered: dict[str, tuple[Entry, ...]] = field(default_factory=dict)
    replaced_by: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass(slots=True)
class _Meta:
    origin: str
    module: str
    distribution: str | None


_HOOKABLE = (types.FunctionType, staticmethod, classmethod, types.MethodType)


class BkPluginManager(pluggy.PluginManager):
    """pluggy's manager with bkcore's loading rules and a typed facade."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        for module_path in FAMILIES.values():
            self.add_hookspecs(importlib.import_module(module_path))
        self._meta: dict[str, _Meta] = {}
        self._registries: dict[str, Registry] = {}

    # -- registration ------------------------------------------------------------------

    # pluggy looks at every name of a plugin (and of a hookspec module) with
    # inspect.getattr_static, ~50 us a name: for plain modules, the names are the module's
    # __dict__ keys, and only a function, staticmethod, classmethod or bound method there can
    # be a hook. Anything else is skipped here without the static lookup (same answer, a
    # fraction of the start-up cost); other objects and candidates go through pluggy.
    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        if type(plugin) is types.ModuleType and not isinstance(
            plugin.__dict__.get(name), _HOOKABLE
        ):
            return None
        return super().parse_hookimpl_opts(plugin, name)

    def parse_hookspec_opts(self, module_or_class: Any, name: str) -> pluggy.HookspecOpts | None:
        if type(module_or_class) is types.ModuleType and not isinstance(
            module_or_class.__dict__.get(name), _HOOKABLE
        ):
            return None
        return super().parse_hookspec_opts(module_or_class, name)

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """Register ``plugin``; refuse async or unknown hooks with :class:`PluginError`."""
        plugin_name = name or self.get_canonical_name(plugin)
        return self._register_with(
            plugin, plugin_name, _Meta(ORIGIN_DIRECT, _module_of(plugin), None)
        )

    def _register_with(self, plugin: Any, plugin_name: str, meta: _Meta) -> str | None:
        who = describe_plugin(plugin_name, meta.distribution)
        if self.get_plugin(plugin_name) is not None:
            other = self._meta[plugin_name]
            raise PluginError(
                f"{who} from {meta.module} cannot be loaded: the name is already used by "
                f"{describe_plugin(plugin_name, other.distribution)} from {other.module}"
            )
        if self.is_registered(plugin):
            raise PluginError(f"{who}: already registered as {self.get_name(plugin)!r}")
        if self.is_blocked(plugin_name):
            return None
        self._check_hookimpls(plugin, who)
        self._meta[plugin_name] = meta
        try:
            super().register(plugin, plugin_name)
        except pluggy.PluginValidationError as exc:
            self.unregister(name=plugin_name)
            del self._meta[plugin_name]
            raise PluginError(f"{who} has an invalid hook: {_first_line(exc)}") from exc
        snapshots = {family: r.snapshot() for family, r in self._registries.items()}
        try:
            for family, registry in self._registries.items():
                self._call_registration(plugin_name, family, registry)
        except BaseException:  # undo: the plugin is either fully registered or not at all
            for family, registry in self._registries.items():
                registry.restore(snapshots[family])
            self.unregister(name=plugin_name)
            del self._meta[plugin_name]
            raise
        return plugin_name

    def _check_hookimpls(self, plugin: Any, who: str) -> None:
        for attr in dir(plugin):
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                if attr.startswith("bkcore_") and callable(getattr(plugin, attr, None)):
                    raise PluginError(
                        f"{who}: {attr} is not marked with @bkcore.hookspecs.hookimpl"
                    )
                continue
            hook_name = opts.get("specname") or attr
            function = getattr(plugin, attr)
            if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
                raise PluginError(
                    f"{who}: hook {hook_name} is async; bkcore hooks must be synchronous "
                    "(return an object whose methods are async instead)"
                )
            caller = getattr(self.hook, hook_name, None)
            if (caller is None or not caller.has_spec()) and not opts.get("optionalhook"):
                raise PluginError(f"{who}: unknown hook {hook_name} (no such bkcore hook)")

    def _register_as(self, plugin: Any, name: str, meta: _Meta) -> str:
        if self.is_registered(plugin):
            return self.get_name(plugin) or name
        self._register_with(plugin, name, meta)
        return name

    def load_module(
        self, module_path: str, *, origin: str = ORIGIN_CLI, distribution: str | None = None
    ) -> str:
        """Import ``module_path`` and register it as a plugin named after the module."""
        try:
            module = importlib.import_module(module_path)
        except Exception as exc:
            dist = distribution or _distribution_of(module_path)
            provider = f"distribution {dist!r}" if dist else "no installed distribution"
            if isinstance(exc, ModuleNotFoundError) and _is_missing(exc, module_path):
                where = f"in distribution {dist!r}" if dist else "(no installed distribution)"
                message = f"plugin module {module_path!r} not found {where}"
            else:
                message = (
                    f"plugin module {module_path!r} from {provider} failed to import: "
                    f"{type(exc).__name__}: {exc}"
                )
            raise PluginError(message) from exc
        if distribution is None and origin != ORIGIN_BUILTIN:
            distribution = _distribution_of(module_path)
        return self._register_as(module, module_path, _Meta(origin, module_path, distribution))

    def load_builtins(self, modules: Iterable[str] = BUILTIN_PLUGINS) -> None:
        """Register the built-in plugin modules (by module path)."""
        from bkcore import __version__

        for module_path in modules:
            self.load_module(
                module_path, origin=ORIGIN_BUILTIN, distribution=f"bkcore {__version__}"
            )

    def load_entry_points(
        self, entry_points: Iterable[EntryPoint | FoundEntryPoint] | None = None
    ) -> None:
        """Register every entry point of group ``bkcore`` (or the given ones)."""
        if entry_points is None:
            from bkcore.entrypoints import entry_points as installed

            entry_points = installed(ENTRY_POINT_GROUP)
        builtins = set(BUILTIN_PLUGINS)
        for ep in entry_points:
            if ep.value in builtins:
                continue  # listed in bkcore's own metadata; already loaded as a built-in
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else None
            try:
                plugin = ep.load()
            except Exception as exc:
                provider = f"distribution {dist!r}" if dist else "an unknown distribution"
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}) from {provider} failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self._register_as(plugin, ep.name, _Meta(ORIGIN_ENTRY_POINT, ep.value, dist))

    # -- typed facade ------------------------------------------------------------------

    def registry(self, family: str) -> Registry:
        """The registry of ``family``, filled by each plugin's registration hook in turn."""
        registry = self._registries.get(family)
        if registry is not None:
            return registry
        if family not in FAMILIES:
            raise PluginError(f"unknown plugin family {family!r} (known: {', '.join(FAMILIES)})")
        registry = Registry(family)
        for plugin_name, plugin in self.list_name_plugin():
            if plugin is not None:
                self._call_registration(plugin_name, family, registry)
        self._registries[family] = registry
        return registry

    def _call_registration(self, plugin_name: str, family: str, registry: Registry) -> None:
        hook_name = register_hook_name(family)
        caller = getattr(self.hook, hook_name)
        meta = self._meta[plugin_name]
        for impl in caller.get_hookimpls():
            if impl.plugin_name != plugin_name:
                continue
            if impl.hookwrapper or impl.wrapper:
                who = describe_plugin(plugin_name, meta.distribution)
                raise PluginError(f"{who}: {hook_name} cannot be a hook wrapper")
            kwargs = {"registry": registry}
            with registry.registering_as(plugin_name, meta.distribution):
                try:
                    impl.function(*(kwargs[arg] for arg in impl.argnames))
                except BkError:
                    raise
                except Exception as exc:
                    who = describe_plugin(plugin_name, meta.distribution)
                    raise PluginError(
                        f"{who} failed in {hook_name}: {type(exc).__name__}: {exc}"
                    ) from exc

    def plugins(self) -> list[PluginInfo]:
        """Every loaded plugin in load order, with its hooks and registrations per family."""
        added: dict[str, dict[str, list[Entry]]] = {}  # plugin -> family -> entries
        replaced_by: dict[str, dict[tuple[str, str], str]] = {}
        for family in FAMILIES:
            for active in self.registry(family).entries():
                entry: Entry | None = active
                winner: str | None = None
                while entry is not None:
                    added.setdefault(entry.plugin, {}).setdefault(family, []).append(entry)
                    if winner is not None:
                        replaced_by.setdefault(entry.plugin, {})[(family, entry.key)] = winner
                    winner, entry = entry.plugin, entry.replaces
        infos = []
        for plugin_name, plugin in self.list_name_plugin():
            if plugin is None:
                continue
            meta = self._meta[plugin_name]
            hooks = tuple(sorted(caller.name for caller in self.get_hookcallers(plugin) or ()))
            registered = {f: tuple(e) for f, e in added.get(plugin_name, {}).items()}
            infos.append(
                PluginInfo(
                    name=plugin_name,
                    module=meta.module,
                    origin=meta.origin,
                    distribution=meta.distribution,
                    hooks=hooks,
                    registered=registered,
                    replaced_by=replaced_by.get(plugin_name, {}),
                )
            )
        return infos

    def select_worker(self, vertex_platform: str | None, workers: Sequence[Any]) -> Any | None:
        """Ask plugins which worker runs a vertex (``firstresult``); ``None`` = default."""
        hook: Callable[..., Any] = self.hook.bkcore_select_worker
        return hook(vertex_platform=vertex_platform, workers=list(workers))


_managers: dict[tuple[str, ...], BkPluginManager] = {}


def split_modules(values: Iterable[str]) -> tuple[str, ...]:
    """Split ``--plugin a,b --plugin c`` values into ``("a", "b", "c")`` without duplicates."""
    seen: dict[str, None] = {}
    for value in values:
        for part in value.split(","):
            if part.strip():
                seen.setdefault(part.strip(), None)
    return tuple(seen)


def get_plugin_manager(extra_modules: Sequence[str] = ()) -> BkPluginManager:
    """The manager with built-ins, entry points and ``extra_modules`` loaded (cached)."""
    key = split_modules(extra_modules)
    manager = _managers.get(key)
    if manager is None:
        manager = BkPluginManager()
        manager.load_builtins()
        manager.load_entry_points()
        for module_path in key:
            manager.load_module(module_path, origin=ORIGIN_CLI)
        _managers[key] = manager
    return manager


def reset_plugin_managers() -> None:
    """Forget cached managers (tests; after installing a plugin at run time)."""
    _managers.clear()
    _packages_distributions.cache_clear()


def _module_of(plugin: Any) -> str:
    if inspect.ismodule(plugin):
        return plugin.__name__
    kind = plugin if isinstance(plugin, type) else type(plugin)
    return f"{kind.__module__}:{kind.__qualname__}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_missing(exc: ModuleNotFoundError, module_path: str) -> bool:
    """True when the plugin module itself (or a parent package) is what is missing."""
    return exc.name is not None and (module_path + ".").startswith(exc.name + ".")


@cache
def _packages_distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return dict(packages_distributions())


def _distribution_of(module_path: str) -> str | None:
    """``"name version"`` of the installed distribution providing ``module_path``."""
    from importlib.metadata import PackageNotFoundError, version

    names = _packages_distributions().get(module_path.partition(".")[0])
    if not names:
        return None
    try:
        return f"{names[0]} {version(names[0])}"
    except PackageNotFoundError:
        return names[0]
