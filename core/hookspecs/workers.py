"""Hook specification of the workers family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bkcore.hookspecs import hookspec

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookspec
def bkcore_register_workers(registry: Registry) -> None:
    """Register worker implementations (executor plus snapshotter).

    **When called:** the first time the ``workers`` registry is needed
    (``BkPluginManager.registry("workers")``), once per plugin, in load order: built-ins,
    then entry points of group ``bkcore``, then ``--plugin`` modules. Each plugin's
    implementation is called on its own, so the registry records which plugin (and which
    distribution) added which key.

    **Params:** ``registry`` -- the :class:`bkcore.registry.Registry` of this family. Call
    ``registry.add(key, "module.path:attr", description="...")`` where ``key`` is the worker
    name (``runc``, ``containerd``). The target is imported only when first used
    (``registry.load(key)``), so this function stays import-free. A duplicate key raises
    :class:`bkcore.errors.PluginConflictError` naming both plugins; pass ``replace=True`` to
    take over a key on purpose (recorded in the entry).

    **Return:** nothing (ignored). Must be synchronous and free of I/O.
    """


@hookspec(firstresult=True)
def bkcore_select_worker(vertex_platform: str | None, workers: Sequence[Any]) -> Any | None:
    """Choose the worker that runs one vertex (a per-request choice).

    **When called:** by the solver for each vertex that needs a worker, when more than one
    worker is available. The first implementation returning non-``None`` wins
    (``firstresult``); if every implementation returns ``None`` the solver uses its default
    (the first worker whose platforms include ``vertex_platform``).

    **Params:** ``vertex_platform`` -- the vertex's platform as ``os/arch[/variant]``, or
    ``None`` when the vertex does not constrain it; ``workers`` -- the available worker
    objects, in the daemon's configured order.

    **Return:** one element of ``workers``, or ``None`` to let another implementation (or
    the default) decide. Must be synchronous and free of I/O.
    """
