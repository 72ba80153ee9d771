"""The runc worker: run one process in an OCI container from a rootfs directory and mounts."""

from __future__ import annotations

from .executor import RuncExecutor
from .info import check, worker_info
from .types import DEFAULT_HOSTNAME, DEFAULT_PATH, MountSpec, ProcessSpec, Ulimit

__all__ = [
    "DEFAULT_HOSTNAME",
    "DEFAULT_PATH",
    "MountSpec",
    "ProcessSpec",
    "RuncExecutor",
    "Ulimit",
    "check",
    "worker_info",
]
