"""``bkcore plugins`` rendering: per-family keys, replacements, non-registration hooks."""

from __future__ import annotations

from typing import Any

from bkcore.cli.plugins_cmd import to_json, to_text
from bkcore.hookspecs import hookimpl
from bkcore.pluginmanager import BkPluginManager
from bkcore.registry import Registry


class Base:
    @hookimpl
    def bkcore_register_exporters(self, registry: Registry) -> None:
        registry.add("image", "json:dumps", description="image exporter")
        registry.add("tar", "json:dumps")

    @hookimpl
    def bkcore_register_sources(self, registry: Registry) -> None:
        registry.add("local", "json:dumps")


class Override:
    @hookimpl
    def bkcore_register_exporters(self, registry: Registry) -> None:
        registry.add("image", "json:loads", replace=True)

    @hookimpl
    def bkcore_select_worker(self, vertex_platform: str | None, workers: list[Any]) -> Any:
        return None


class Nothing:
    pass


def manager() -> BkPluginManager:
    pm = BkPluginManager()
    pm.register(Base(), "base")
    pm.register(Override(), "override")
    pm.register(Nothing(), "nothing")
    return pm


def test_text_lists_families_in_order_and_replacements() -> None:
    assert to_text(manager().plugins()) == (
        "base (direct)\n"
        "  sources: local\n"
        "  exporters: image (replaced by override), tar\n"
        "override (direct)\n"
        "  exporters: image (replaces base)\n"
        "  hooks: bkcore_select_worker\n"
        "nothing (direct)\n"
    )
    assert to_text([]) == "no plugins loaded\n"


def test_json_document() -> None:
    doc = to_json(manager().plugins())
    base, override, nothing = doc["plugins"]
    assert base["registered"] == {
        "sources": [{"key": "local", "target": "json:dumps", "description": ""}],
        "exporters": [
            {
                "key": "image",
                "target": "json:dumps",
                "description": "image exporter",
                "replaced_by": "override",
            },
            {"key": "tar", "target": "json:dumps", "description": ""},
        ],
    }
    assert base["hooks"] == ["bkcore_register_exporters", "bkcore_register_sources"]
    assert override["registered"]["exporters"][0]["replaces"] == {
        "plugin": "base",
        "distribution": None,
        "target": "json:dumps",
    }
    assert override["hooks"] == ["bkcore_register_exporters", "bkcore_select_worker"]
    assert nothing == {
        "name": "nothing",
        "module": f"{__name__}:Nothing",
        "origin": "direct",
        "distribution": None,
        "hooks": [],
        "registered": {},
    }
