"""Per-family registries of lazily imported plugin objects.

A plugin's registration hook calls ``registry.add(key, "module.path:attr")``. Nothing is
imported until ``registry.load(key)``, so registering stays cheap. Each entry remembers the
plugin (and distribution) that added it; a second plugin claiming the same key raises
:class:`~bkcore.errors.PluginConflictError` naming both, unless it passes ``replace=True``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bkcore.errors import PluginConflictError, PluginError

_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?$")

#: Plugin name used for entries added outside a plugin's registration hook (tests, scripts).
UNKNOWN_PLUGIN = "<direct>"


@dataclass(frozen=True, slots=True)
class Entry:
    """One registered key: who registered what, and whom it replaced (if anyone)."""

    family: str
    key: str
    target: str
    plugin: str
    distribution: str | None = None
    description: str = ""
    replaces: Entry | None = None

    @property
    def owner(self) -> str:
        """``plugin 'name' (distribution)``: how messages name the registering plugin."""
        return describe_plugin(self.plugin, self.distribution)


def describe_plugin(plugin: str, distribution: str | None) -> str:
    """Name a plugin for a person: ``plugin 'x' (from distribution 'dist 1.0')``."""
    if distribution:
        return f"plugin {plugin!r} (distribution {distribution!r})"
    return f"plugin {plugin!r}"


class Registry:
    """Keys of one plugin family (sources by scheme, everything else by name)."""

    def __init__(self, family: str) -> None:
        self._family = family
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, Any] = {}
        self._plugin = UNKNOWN_PLUGIN
        self._distribution: str | None = None

    @property
    def family(self) -> str:
        return self._family

    @contextmanager
    def registering_as(self, plugin: str, distribution: str | None) -> Iterator[Registry]:
        """Attribute every ``add`` inside the block to ``plugin`` (used by the manager)."""
        previous = self._plugin, self._distribution
        self._plugin, self._distribution = plugin, distribution
        try:
            yield self
        finally:
            self._plugin, self._distribution = previous

    def add(self, key: str, target: str, *, description: str = "", replace: bool = False) -> Entry:
        """Register ``target`` (``"module.path:attr"``, imported lazily) under ``key``.

        Raises :class:`PluginConflictError` if ``key`` is taken and ``replace`` is false, and
        :class:`PluginError` for an empty key or a malformed target.
        """
        who = describe_plugin(self._plugin, self._distribution)
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise PluginError(f"{who} registered an invalid {self._family} key {key!r}")
        if not isinstance(target, str) or not _TARGET.match(target):
            raise PluginError(
                f"{who} registered {self._family} {key!r} with invalid target {target!r} "
                "(expected 'module.path:attr')"
            )
        previous = self._entries.get(key)
        if previous is not None and not replace:
            raise PluginConflictError(self._family, key, previous.owner, who)
        entry = Entry(
            family=self._family,
            key=key,
            target=target,
            plugin=self._plugin,
            distribution=self._distribution,
            description=description,
            replaces=previous,
        )
        self._entries[key] = entry
        self._loaded.pop(key, None)
        return entry

    def snapshot(self) -> dict[str, Entry]:
        """The current entries, for :meth:`restore` (the manager undoes a failed plugin)."""
        return dict(self._entries)

    def restore(self, snapshot: dict[str, Entry]) -> None:
        """Go back to the entries of an earlier :meth:`snapshot`."""
        self._entries = dict(snapshot)
        self._loaded = {k: v for k, v in self._loaded.items() if k in snapshot}

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def entries(self) -> list[Entry]:
        """Every entry, in registration order."""
        return list(self._entries.values())

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, key: str) -> Any:
        """Import and return the object registered under ``key`` (cached after the first call).

        Raises :class:`PluginError` for an unknown key, or naming the plugin and its
        distribution when the target cannot be imported.
        """
        if key in self._loaded:
            return self._loaded[key]
        entry = self._entries.get(key)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise PluginError(f"no {self._family} registered as {key!r} (known: {known})")
        value = _import_target(entry)
        self._loaded[key] = value
        return value


def _import_target(entry: Entry) -> Any:
    module_name, _, attr_path = entry.target.partition(":")
    where = f"{entry.family} {entry.key!r} of {entry.owner}"
    try:
        value: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"cannot import {entry.target} for {where}: {exc}") from exc
    for attr in attr_path.split(".") if attr_path else ():
        try:
            value = getattr(value, attr)
        except AttributeError as exc:
            raise PluginError(f"{entry.target} for {where} does not exist: {exc}") from exc
    return value
