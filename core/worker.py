"""What a worker is to the core: something that runs one process in a container.

The value types describing a run (:class:`MountSpec`, :class:`ProcessSpec`) live here so that
op adapters in the core and worker plugins share them without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOSTNAME = "buildkitsandbox"

MountKind = Literal["bind", "tmpfs"]
NetworkMode = Literal["sandbox", "host", "none"]
OutputCallback = Callable[[int, bytes], None]
"""Receives raw output chunks: (1 for stdout or 2 for stderr, bytes)."""


@dataclass(frozen=True)
class MountSpec:
    """One mount inside the container.

    ``dest`` is the path inside the container (relative paths are joined onto the process
    ``cwd``). For ``bind`` mounts ``source`` is a host path (file or directory). For ``tmpfs``
    mounts ``tmpfs_size`` is the size limit in bytes (0 means the kernel default).
    """

    dest: str
    source: str = ""
    kind: MountKind = "bind"
    readonly: bool = False
    tmpfs_size: int = 0


@dataclass(frozen=True)
class Ulimit:
    """A resource limit, named like ``ulimit``/Docker does (``nofile``, ``nproc``, ``core``)."""

    name: str
    soft: int
    hard: int


@dataclass(frozen=True)
class ProcessSpec:
    """The process to run and the sandbox it runs in.

    ``user`` is ``""`` (root), ``uid``, ``uid:gid``, ``name`` or ``name:group``; names are
    looked up in the rootfs's ``/etc/passwd`` and ``/etc/group``. ``network`` ``sandbox`` and
    ``none`` both get a private network namespace with only loopback (there is no CNI here);
    ``host`` shares the host's. ``insecure`` runs privileged. ``readonly_rootfs`` mounts the
    root filesystem read-only (LLB: a read-only mount at ``/``).
    """

    args: Sequence[str]
    env: Sequence[str] = ()
    cwd: str = "/"
    user: str = ""
    hostname: str = ""
    network: NetworkMode = "sandbox"
    insecure: bool = False
    extra_hosts: Sequence[tuple[str, str]] = ()
    ulimits: Sequence[Ulimit] = ()
    cgroup_parent: str = ""
    readonly_rootfs: bool = False


@dataclass(frozen=True)
class WorkerInfo:
    """How ``bkcore debug workers`` shows a worker (BuildKit's ``WorkerRecord``)."""

    id: str
    platforms: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)


class Worker(Protocol):
    """Runs processes in containers on one kind of runtime."""

    @property
    def name(self) -> str:
        """Registry name of the worker (``runc``)."""
        ...

    def info(self) -> WorkerInfo:
        """Identity, platforms and labels."""
        ...

    async def run(
        self,
        rootfs: str,
        mounts: Sequence[MountSpec],
        process: ProcessSpec,
        *,
        on_output: OutputCallback | None = None,
    ) -> int:
        """Run ``process`` on ``rootfs`` with ``mounts``; return its exit code.

        Cancellation kills and reaps the container, then re-raises ``CancelledError``.
        """
        ...
