"""``bkcore plugins``: every loaded plugin and what it registered, per family."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bkcore.hookspecs import FAMILIES
from bkcore.pluginmanager import BkPluginManager, PluginInfo, get_plugin_manager
from bkcore.registry import Entry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )


def run(args: argparse.Namespace) -> int:
    manager: BkPluginManager = getattr(args, "plugin_manager", None) or get_plugin_manager(
        getattr(args, "plugins", ())
    )
    infos = manager.plugins()
    if args.format == "json":
        json.dump(to_json(infos), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(to_text(infos))
    return 0


def _entry_json(entry: Entry, replaced_by: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": entry.key,
        "target": entry.target,
        "description": entry.description,
    }
    if replaced_by is not None:
        data["replaced_by"] = replaced_by
    if entry.replaces is not None:
        data["replaces"] = {
            "plugin": entry.replaces.plugin,
            "distribution": entry.replaces.distribution,
            "target": entry.replaces.target,
        }
    return data


def to_json(infos: list[PluginInfo]) -> dict[str, Any]:
    """The ``--format json`` document: ``{"plugins": [...]}`` in load order."""
    return {
        "plugins": [
            {
                "name": info.name,
                "module": info.module,
                "origin": info.origin,
                "distribution": info.distribution,
                "hooks": list(info.hooks),
                "registered": {
                    family: [
                        _entry_json(e, info.replaced_by.get((family, e.key)))
                        for e in info.registered[family]
                    ]
                    for family in FAMILIES
                    if family in info.registered
                },
            }
            for info in infos
        ]
    }


def _entry_text(info: PluginInfo, family: str, entry: Entry) -> str:
    notes = []
    if entry.replaces is not None:
        notes.append(f"replaces {entry.replaces.plugin}")
    winner = info.replaced_by.get((family, entry.key))
    if winner is not None:
        notes.append(f"replaced by {winner}")
    return entry.key + (f" ({'; '.join(notes)})" if notes else "")


def to_text(infos: list[PluginInfo]) -> str:
    """One block per plugin: name, origin, distribution, then one line per family."""
    lines: list[str] = []
    for info in infos:
        source = info.origin + (f", {info.distribution}" if info.distribution else "")
        lines.append(f"{info.name} ({source})")
        for family in FAMILIES:
            entries = info.registered.get(family, ())
            if entries:
                keys = ", ".join(_entry_text(info, family, e) for e in entries)
                lines.append(f"  {family}: {keys}")
        other = [h for h in info.hooks if not h.startswith("bkcore_register_")]
        if other:
            lines.append(f"  hooks: {', '.join(other)}")
    return "\n".join(lines) + "\n" if lines else "no plugins loaded\n"
