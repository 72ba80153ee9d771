"""Hook specification of the ``commands`` family (CLI extensions), and the command protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bkcore.hookspecs import hookspec

if TYPE_CHECKING:
    import argparse

    from bkcore.registry import Registry


class Command(Protocol):
    """What a ``commands`` registry target must provide (a module or any object).

    ``add_arguments(parser)`` adds the command's options to its own argparse sub-parser;
    it is called only when this command is the one being run (or asked for ``--help``).
    ``run(args)`` runs the command and returns the process exit status. ``args`` also
    carries the global options: ``args.debug`` (bool), ``args.root`` (str | None),
    ``args.plugins`` (tuple of ``--plugin`` module names) and ``args.plugin_manager`` (the
    loaded :class:`bkcore.pluginmanager.BkPluginManager`). Raise a
    :class:`bkcore.errors.BkError` to fail with one ``error: ...`` line and status 1.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


@hookspec
def bkcore_register_commands(registry: Registry) -> None:
    """Register CLI commands of ``bkcore``.

    **When called:** at every ``bkcore`` start, once per plugin, in load order: built-ins,
    then entry points of group ``bkcore``, then ``--plugin`` modules. Each plugin's
    implementation is called on its own, so the registry records who added which command.

    **Params:** ``registry`` -- the :class:`bkcore.registry.Registry` of commands. Call
    ``registry.add("du", "my.module:command", description="show disk usage")``. The key is
    the command path: words separated by one space (``"debug workers"`` adds ``workers``
    under the ``debug`` group). The target satisfies :class:`Command`; it is imported only
    when that command runs, and ``description`` is the one line ``bkcore --help`` shows.
    A duplicate path raises :class:`bkcore.errors.PluginConflictError` naming both plugins;
    ``replace=True`` takes over a command on purpose.

    **Return:** nothing (ignored). Must be synchronous, cheap and free of I/O: it runs on
    every start-up.
    """
