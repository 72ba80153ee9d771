"""pluggy hook specifications of bkcore, one module per plugin family.

A plugin is a module (or any object) whose functions are marked with :data:`hookimpl` and
named after a hook below. Hooks are synchronous, cheap and free of I/O: registration hooks
only record lazy ``"module.path:attr"`` targets in a :class:`bkcore.registry.Registry`; the
target is imported when it is first used. Async hook implementations are refused.

Families (registry name -> hook):

==================== =========================================== ============================
family               hook                                        keyed by
==================== =========================================== ============================
sources              bkcore_register_sources(registry)           URL scheme (``docker-image``)
frontends            bkcore_register_frontends(registry)         frontend name
workers              bkcore_register_workers(registry)           worker name
exporters            bkcore_register_exporters(registry)         exporter name (``image``)
cache_backends       bkcore_register_cache_backends(registry)    cache backend name
attachables          bkcore_register_attachables(registry)       attachable name
progress_renderers   bkcore_register_progress_renderers(registry) renderer name (``plain``)
commands             bkcore_register_commands(registry)          command path (``debug workers``)
==================== =========================================== ============================

Per-request choice (``firstresult``): ``bkcore_select_worker(vertex_platform, workers)``.
"""

from __future__ import annotations

import pluggy

PROJECT = "bkcore"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: family name -> module (under ``bkcore.hookspecs``) holding its hook specifications.
FAMILIES: dict[str, str] = {
    "sources": "bkcore.hookspecs.sources",
    "frontends": "bkcore.hookspecs.frontends",
    "workers": "bkcore.hookspecs.workers",
    "exporters": "bkcore.hookspecs.exporters",
    "cache_backends": "bkcore.hookspecs.cache_backends",
    "attachables": "bkcore.hookspecs.attachables",
    "progress_renderers": "bkcore.hookspecs.progress",
    "commands": "bkcore.hookspecs.commands",
}


def register_hook_name(family: str) -> str:
    """Return the registration hook name of ``family`` (``bkcore_register_<family>``)."""
    return f"bkcore_register_{family}"


__all__ = ["FAMILIES", "PROJECT", "hookimpl", "hookspec", "register_hook_name"]
