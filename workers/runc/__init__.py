"""The runc worker: run one process in an OCI container from a rootfs directory and mounts.

The names below are imported on first access, so loading the cheap ``plugin`` module of this
package at start-up imports nothing else (no asyncio).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.lazy import module_getattr

if TYPE_CHECKING:
    from .executor import RuncExecutor
    from .info import check, worker_info
    from .types import DEFAULT_HOSTNAME, DEFAULT_PATH, MountSpec, ProcessSpec, Ulimit
    from .worker import RuncWorker

__all__ = [
    "DEFAULT_HOSTNAME",
    "DEFAULT_PATH",
    "MountSpec",
    "ProcessSpec",
    "RuncExecutor",
    "RuncWorker",
    "Ulimit",
    "check",
    "worker_info",
]

_WHERE = {
    "DEFAULT_HOSTNAME": ".types",
    "DEFAULT_PATH": ".types",
    "MountSpec": ".types",
    "ProcessSpec": ".types",
    "Ulimit": ".types",
    "RuncExecutor": ".executor",
    "RuncWorker": ".worker",
    "check": ".info",
    "worker_info": ".info",
}


__getattr__ = module_getattr(globals(), _WHERE)
