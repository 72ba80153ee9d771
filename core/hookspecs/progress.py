"""Hook specification of the progress_renderers family."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookspec

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookspec
def bkcore_register_progress_renderers(registry: Registry) -> None:
    """Register progress renderers.

    **When called:** the first time the ``progress_renderers`` registry is needed
    (``BkPluginManager.registry("progress_renderers")``), once per plugin, in load order: built-ins,
    then entry points of group ``bkcore``, then ``--plugin`` modules. Each plugin's
    implementation is called on its own, so the registry records which plugin (and which
    distribution) added which key.

    **Params:** ``registry`` -- the :class:`bkcore.registry.Registry` of this family. Call
    ``registry.add(key, "module.path:attr", description="...")`` where ``key`` is the renderer
    name (``tty``, ``plain``, ``rawjson``). The target is imported only when first used
    (``registry.load(key)``), so this function stays import-free. A duplicate key raises
    :class:`bkcore.errors.PluginConflictError` naming both plugins; pass ``replace=True`` to
    take over a key on purpose (recorded in the entry).

    **Return:** nothing (ignored). Must be synchronous and free of I/O.

    The target reads the progress event stream and draws it; progress events never travel
    through hooks.
    """
