"""Value types describing one container run: its mounts and its process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOSTNAME = "buildkitsandbox"

MountKind = Literal["bind", "tmpfs"]
NetworkMode = Literal["sandbox", "host", "none"]


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
    ``host`` shares the host's. ``insecure`` runs privileged.
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
