"""Built-in plugin of the runc worker: registers the worker and ``bkcore debug workers``.

Holds only hook implementations; nothing heavy is imported until a target is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_workers(registry: Registry) -> None:
    registry.add(
        "runc",
        "bkcore.workers.runc.worker:RuncWorker",
        description="run build steps in runc containers (OCI bundles, overlayfs snapshots)",
    )


@hookimpl
def bkcore_register_commands(registry: Registry) -> None:
    registry.add(
        "debug workers",
        "bkcore.cli.workers_cmd",
        description="show the workers of this bkcore (id, platforms, labels)",
    )
