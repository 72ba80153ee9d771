"""Hook specification of the cache_backends family."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookspec

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookspec
def bkcore_register_cache_backends(registry: Registry) -> None:
    """Register remote cache import/export backends.

    **When called:** the first time the ``cache_backends`` registry is needed
    (``BkPluginManager.registry("cache_backends")``), once per plugin, in load order: built-ins,
    then entry points of group ``bkcore``, then ``--plugin`` modules. Each plugin's
    implementation is called on its own, so the registry records which plugin (and which
    distribution) added which key.

    **Params:** ``registry`` -- the :class:`bkcore.registry.Registry` of this family. Call
    ``registry.add(key, "module.path:attr", description="...")`` where ``key`` is the backend
    name (``registry``, ``local``, ``inline``). The target is imported only when first used
    (``registry.load(key)``), so this function stays import-free. A duplicate key raises
    :class:`bkcore.errors.PluginConflictError` naming both plugins; pass ``replace=True`` to
    take over a key on purpose (recorded in the entry).

    **Return:** nothing (ignored). Must be synchronous and free of I/O.
    """
