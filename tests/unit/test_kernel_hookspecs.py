"""Hook specifications: one module per family, every hook documented, markers shared."""

from __future__ import annotations

import importlib
import inspect

import pluggy
import pytest

from bkcore import hookspecs
from bkcore.hookspecs import FAMILIES, register_hook_name


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_has_its_own_documented_module(family: str) -> None:
    module = importlib.import_module(FAMILIES[family])
    hooks = [name for name in dir(module) if name.startswith("bkcore_")]
    assert register_hook_name(family) in hooks
    for name in hooks:
        function = getattr(module, name)
        assert getattr(function, "bkcore_spec", None) is not None, name
        doc = inspect.getdoc(function) or ""
        for part in ("**When called:**", "**Params:**", "**Return:**"):
            assert part in doc, f"{name} lacks {part}"
        assert not inspect.iscoroutinefunction(function)


def test_family_modules_are_distinct() -> None:
    assert len(set(FAMILIES.values())) == len(FAMILIES)
    assert set(FAMILIES) == {
        "sources",
        "frontends",
        "workers",
        "exporters",
        "cache_backends",
        "attachables",
        "progress_renderers",
        "commands",
    }


def test_select_worker_is_firstresult_and_markers_share_the_project() -> None:
    from bkcore.hookspecs.workers import bkcore_select_worker

    assert bkcore_select_worker.bkcore_spec["firstresult"] is True  # type: ignore[attr-defined]
    assert isinstance(hookspecs.hookspec, pluggy.HookspecMarker)
    assert hookspecs.hookspec.project_name == hookspecs.hookimpl.project_name == "bkcore"


def test_every_hook_name_is_bkcore_verb_noun() -> None:
    for module_path in FAMILIES.values():
        module = importlib.import_module(module_path)
        for name in dir(module):
            if getattr(getattr(module, name), "bkcore_spec", None) is not None:
                assert name.startswith("bkcore_") and name.count("_") >= 2, name
