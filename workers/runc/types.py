"""Value types describing one container run; shared with the core (``bkcore.worker``)."""

from __future__ import annotations

from bkcore.worker import (
    DEFAULT_HOSTNAME,
    DEFAULT_PATH,
    MountKind,
    MountSpec,
    NetworkMode,
    OutputCallback,
    ProcessSpec,
    Ulimit,
)

__all__ = [
    "DEFAULT_HOSTNAME",
    "DEFAULT_PATH",
    "MountKind",
    "MountSpec",
    "NetworkMode",
    "OutputCallback",
    "ProcessSpec",
    "Ulimit",
]
