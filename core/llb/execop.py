"""ExecOp: running a process, and the mounts it can have."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bkcore.errors import DefinitionError
from bkcore.llb import pb
from bkcore.llb.pbmake import make
from bkcore.llb.state import State
from bkcore.llb.vertex import (
    InputTable,
    MarshalContext,
    Marshalled,
    OpMeta,
    Output,
    Vertex,
    unique_outputs,
)

SSH_AUTH_SOCK = "SSH_AUTH_SOCK"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# pb enum members are typed as int by betterproto; construct them for precise types.
_BIND = pb.MountType(0)
_SECRET = pb.MountType(1)
_SSH = pb.MountType(2)
_CACHE = pb.MountType(3)
_TMPFS = pb.MountType(4)


class CacheSharing(enum.IntEnum):
    """How concurrent builds share one cache mount."""

    SHARED = 0
    PRIVATE = 1
    LOCKED = 2


@dataclass(frozen=True, slots=True)
class Bind:
    """A state mounted at ``dest``; writable by default, and then it has a result."""

    dest: str
    source: State
    selector: str = ""
    readonly: bool = False
    no_output: bool = False


@dataclass(frozen=True, slots=True)
class Cache:
    """A persistent cache directory keyed by ``id`` (seeded from ``source`` if given)."""

    dest: str
    id: str
    sharing: CacheSharing = CacheSharing.SHARED
    source: State | None = None
    selector: str = ""


@dataclass(frozen=True, slots=True)
class Tmpfs:
    """An in-memory filesystem; ``size`` in bytes, 0 = the default."""

    dest: str
    size: int = 0


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret file from the session's secret store (``id`` defaults to ``dest``)."""

    dest: str
    id: str = ""
    uid: int = 0
    gid: int = 0
    mode: int = 0o400
    optional: bool = False


@dataclass(frozen=True, slots=True)
class SSH:
    """A forwarded SSH agent socket (``dest`` defaults to ``/run/buildkit/ssh_agent.<n>``)."""

    dest: str = ""
    id: str = ""
    uid: int = 0
    gid: int = 0
    mode: int = 0o600
    optional: bool = False


@dataclass(frozen=True, slots=True)
class SecretEnv:
    """A secret exposed as environment variable ``name`` (``id`` defaults to ``name``)."""

    name: str
    id: str = ""
    optional: bool = False


@dataclass(frozen=True, slots=True)
class ProxyEnv:
    """Proxy settings for the process; not part of the cache key."""

    http_proxy: str = ""
    https_proxy: str = ""
    ftp_proxy: str = ""
    no_proxy: str = ""
    all_proxy: str = ""


Mount = Bind | Cache | Tmpfs | Secret | SSH


def bind(
    dest: str,
    source: State,
    *,
    selector: str = "",
    readonly: bool = False,
    no_output: bool = False,
) -> Bind:
    return Bind(dest, source, selector, readonly, no_output)


def cache(
    dest: str,
    id: str,
    *,
    sharing: CacheSharing = CacheSharing.SHARED,
    source: State | None = None,
    selector: str = "",
) -> Cache:
    """A cache mount; ``source``/``selector`` seed a new cache directory from a state."""
    return Cache(dest, id, CacheSharing(sharing), source, selector)


def tmpfs(dest: str, *, size: int = 0) -> Tmpfs:
    return Tmpfs(dest, size)


def secret(
    dest: str,
    *,
    id: str = "",
    uid: int = 0,
    gid: int = 0,
    mode: int = 0o400,
    optional: bool = False,
) -> Secret:
    return Secret(dest, id or dest, uid, gid, mode, optional)


def ssh(
    *,
    dest: str = "",
    id: str = "",
    uid: int = 0,
    gid: int = 0,
    mode: int = 0o600,
    optional: bool = False,
) -> SSH:
    return SSH(dest, id, uid, gid, mode, optional)


def secret_env(name: str, *, id: str = "", optional: bool = False) -> SecretEnv:
    return SecretEnv(name, id or name, optional)


@dataclass(frozen=True, slots=True)
class _FsMount:
    """A BIND/CACHE/TMPFS mount after sorting, with its output number."""

    dest: str
    state: State | None
    kind: pb.MountType
    output: int
    selector: str = ""
    readonly: bool = False
    cache_id: str = ""
    sharing: CacheSharing = CacheSharing.SHARED
    tmpfs_size: int = 0


class ExecOp(Vertex):
    """One process run. Built by ``State.run``; immutable."""

    __slots__ = (
        "_args",
        "_base",
        "_env",
        "_fs_mounts",
        "_meta",
        "_outputs",
        "_proxy",
        "_secret_env",
        "_secrets",
        "_ssh",
        "_walk",
        "root_output",
    )

    def __init__(
        self,
        base: State,
        args: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        readonly_rootfs: bool = False,
        secret_env: Sequence[SecretEnv] = (),
        proxy_env: ProxyEnv | None = None,
        meta: OpMeta,
    ) -> None:
        self._base = base
        self._args = tuple(args)
        self._meta = meta
        self._proxy = proxy_env
        self._secret_env = tuple(secret_env)
        fs: list[tuple[str, State | None, Mount | None]] = [("/", base, None)]
        secrets: list[Secret] = []
        ssh_mounts: list[SSH] = []
        for m in mounts:
            if not m.dest and not isinstance(m, SSH):
                raise DefinitionError(f"run: mount without a destination: {m!r}")
            if isinstance(m, Secret):
                secrets.append(m if m.id else dataclasses.replace(m, id=m.dest))
            elif isinstance(m, SSH):
                ssh_mounts.append(m)
            elif isinstance(m, Bind | Cache | Tmpfs):
                if m.dest == "/":
                    raise DefinitionError("run: mount at / replaces the root filesystem")
                fs.append((m.dest, getattr(m, "source", None), m))
            else:
                raise DefinitionError(f"run: not a mount: {m!r}")
        self._ssh = tuple(
            s if s.dest else dataclasses.replace(s, dest=f"/run/buildkit/ssh_agent.{i}")
            for i, s in enumerate(ssh_mounts)
        )
        self._secrets = tuple(secrets)
        self._walk = tuple(st for _, st, _ in fs)
        env = list(base._env)
        if self._ssh and base.get_env(SSH_AUTH_SOCK) is None:
            env.append((SSH_AUTH_SOCK, self._ssh[0].dest))
        self._env = tuple(f"{k}={v}" for k, v in env)

        dests = [d for d, _, _ in fs]
        dests += [s.dest for s in self._secrets] + [s.dest for s in self._ssh]
        dupes = sorted({d for d in dests if dests.count(d) > 1})
        if dupes:
            raise DefinitionError(f"run: more than one mount at {', '.join(dupes)}")

        sorted_fs = sorted(fs, key=lambda t: t[0].encode())
        next_out = 0
        built: list[_FsMount] = []
        outputs: dict[str, Output] = {}
        self.root_output: Output | None = None
        for dest, source, spec in sorted_fs:
            out = -1
            if spec is None:  # root
                if not readonly_rootfs:
                    out = next_out
                built.append(_FsMount(dest, source, _BIND, out, readonly=readonly_rootfs))
            elif isinstance(spec, Bind):
                if not spec.readonly and not spec.no_output:
                    out = next_out
                built.append(
                    _FsMount(
                        dest,
                        spec.source,
                        _BIND,
                        out,
                        selector=spec.selector,
                        readonly=spec.readonly,
                    )
                )
            elif isinstance(spec, Cache):
                if not spec.id:
                    raise DefinitionError(f"cache mount {dest}: empty cache id")
                built.append(
                    _FsMount(
                        dest,
                        spec.source,
                        _CACHE,
                        -1,
                        selector=spec.selector,
                        cache_id=spec.id,
                        sharing=spec.sharing,
                    )
                )
            elif isinstance(spec, Tmpfs):
                built.append(_FsMount(dest, None, _TMPFS, -1, tmpfs_size=spec.size))
            if out >= 0:
                outputs[dest] = Output(self, out, base.platform)
                next_out += 1
        self._fs_mounts = tuple(built)
        self._outputs = outputs
        root = outputs.get("/")
        self.root_output = root if root is not None else base.output

    # ---------------------------------------------------------------- results
    def mount_result(self, dest: str) -> State:
        """The State of mount ``dest`` after the process (see ``ExecState.get_mount``)."""
        for m in self._fs_mounts:
            if m.dest != dest:
                continue
            if m.kind != _BIND:
                raise DefinitionError(f"mount {dest} is a cache or tmpfs mount: it has no result")
            src = m.state if m.state is not None else State()
            out = self._outputs.get(dest)
            return src.with_output(out if out is not None else src.output)
        raise DefinitionError(f"no filesystem mount at {dest}")

    # ---------------------------------------------------------------- vertex
    def inputs(self) -> tuple[Output, ...]:
        return unique_outputs(st.output for st in self._walk if st is not None)

    def describe(self) -> str:
        return "exec " + " ".join(self._args)

    def marshal(self, ctx: MarshalContext) -> Marshalled:
        base = self._base
        caps = {"exec.meta.base"}
        table = InputTable(ctx.input_of)
        add, inputs = table.add, table.inputs

        mounts: list[pb.Mount] = []
        for m in self._fs_mounts:
            src = m.state.output if m.state is not None else None
            opts: dict[str, Any] = {}
            if m.selector:
                caps.add("exec.mount.selector")
            if m.kind == _CACHE:
                sharing = pb.CacheSharingOpt(m.sharing)
                opts["cache_opt"] = make(pb.CacheOpt, id=m.cache_id, sharing=sharing)
                caps.update(("exec.mount.cache", "exec.mount.cache.sharing"))
            elif m.kind == _TMPFS:
                opts["tmpfs_opt"] = make(pb.TmpfsOpt, size=m.tmpfs_size)
                caps.add("exec.mount.tmpfs")
                if m.tmpfs_size > 0:
                    caps.add("exec.mount.tmpfs.size")
            elif src is not None:
                caps.add("exec.mount.bind")
            mounts.append(
                make(
                    pb.Mount,
                    input=add(src) if src is not None else -1,
                    selector=m.selector,
                    dest=m.dest,
                    output=m.output,
                    readonly=m.readonly,
                    mount_type=m.kind,
                    **opts,
                )
            )
        for s in self._secrets:
            opt = make(
                pb.SecretOpt, id=s.id, uid=s.uid, gid=s.gid, mode=s.mode, optional=s.optional
            )
            mounts.append(make(pb.Mount, dest=s.dest, mount_type=_SECRET, secret_opt=opt))
            caps.add("exec.mount.secret")
        for h in self._ssh:
            sopt = make(pb.SshOpt, id=h.id, uid=h.uid, gid=h.gid, mode=h.mode, optional=h.optional)
            mounts.append(make(pb.Mount, dest=h.dest, mount_type=_SSH, ssh_opt=sopt))
            caps.add("exec.mount.ssh")

        env = list(self._env)
        if ctx.daemon_caps is not None:
            if "exec.meta.setsdefaultpath" in ctx.daemon_caps:
                caps.add("exec.meta.setsdefaultpath")
            elif not any(e.startswith("PATH=") for e in env):
                env.append("PATH=" + DEFAULT_PATH)
        extra: dict[str, Any] = {}
        if self._proxy is not None:
            p = self._proxy
            extra["proxy_env"] = make(
                pb.ProxyEnv,
                http_proxy=p.http_proxy,
                https_proxy=p.https_proxy,
                ftp_proxy=p.ftp_proxy,
                no_proxy=p.no_proxy,
                all_proxy=p.all_proxy,
            )
            caps.add("exec.meta.proxyenv")
        if base._extra_hosts:
            extra["extra_hosts"] = [
                make(pb.HostIp, host=h.host, ip=h.ip) for h in base._extra_hosts
            ]
        if base._ulimits:
            extra["ulimit"] = [
                make(pb.Ulimit, name=u.name, soft=u.soft, hard=u.hard) for u in base._ulimits
            ]
            caps.add("exec.meta.ulimit")
        if base._cgroup_parent:
            caps.add("exec.meta.cgroup.parent")
        meta = make(
            pb.Meta,
            args=list(self._args),
            env=env,
            cwd=base.cwd,
            user=base.get_user(),
            hostname=base.get_hostname(),
            cgroup_parent=base._cgroup_parent,
            remove_mount_stubs_recursive=True,
            **extra,
        )
        network = base.get_network()
        security = base.get_security()
        if network != 0:
            caps.add("exec.meta.network")
        if security != 0:
            caps.add("exec.meta.security")
        secretenv: dict[str, Any] = {}
        if self._secret_env:
            secretenv["secretenv"] = [
                make(pb.SecretEnv, id=s.id or s.name, name=s.name, optional=s.optional)
                for s in self._secret_env
            ]
            caps.add("exec.secretenv")
        execop = make(
            pb.ExecOp,
            meta=meta,
            mounts=mounts,
            network=pb.NetMode(int(network)),
            security=pb.SecurityMode(int(security)),
            **secretenv,
        )
        op = ctx.op(base.platform, self._meta, platform=True, inputs=inputs, exec=execop)
        return Marshalled(op, self._meta, frozenset(caps))
