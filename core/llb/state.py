"""``State``: an immutable handle on one output of the graph plus the process settings
(env, working directory, user, ...) that later ``run`` calls inherit."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from bkcore.errors import DefinitionError
from bkcore.llb import paths, shellwords
from bkcore.llb.platforms import Platform
from bkcore.llb.vertex import OpMeta, Output

if TYPE_CHECKING:
    from bkcore.llb.definition import Definition
    from bkcore.llb.execop import ExecOp, Mount, ProxyEnv, SecretEnv
    from bkcore.llb.fileop import FileAction


class NetMode(enum.IntEnum):
    """Network of a process: the sandbox (default), the host's, or none."""

    SANDBOX = 0
    HOST = 1
    NONE = 2


class SecurityMode(enum.IntEnum):
    """``INSECURE`` runs the process privileged (needs entitlement ``security.insecure``)."""

    SANDBOX = 0
    INSECURE = 1


@dataclass(frozen=True, slots=True)
class HostIP:
    """One ``/etc/hosts`` entry added to a process."""

    host: str
    ip: str


@dataclass(frozen=True, slots=True)
class Ulimit:
    """One resource limit (``nofile``, ``nproc``, ...) of a process."""

    name: str
    soft: int
    hard: int


class RunOptions(TypedDict, total=False):
    """The keyword options of :meth:`State.run` and :meth:`State.sh` (defaults: ``run``)."""

    mounts: Sequence[Mount]
    env: Mapping[str, str] | None
    cwd: str | None
    user: str | None
    hostname: str | None
    network: NetMode | None
    security: SecurityMode | None
    readonly_rootfs: bool
    secret_env: Sequence[SecretEnv]
    proxy_env: ProxyEnv | None
    meta: OpMeta | None
    custom_name: str | None
    ignore_cache: bool


@dataclass(frozen=True, slots=True)
class State:
    """An immutable handle on a filesystem result plus the settings later processes inherit.

    Every ``with_*`` method returns a new State; nothing is ever changed in place. Build one
    with a source (``image``, ``local``, ``scratch``, ...), derive new ones with ``run``,
    ``file``, ``merge`` and ``diff``, and call ``marshal()`` to get the Definition.
    """

    _output: Output | None = None
    _env: tuple[tuple[str, str], ...] = ()
    _cwd: str = "/"
    _user: str = ""
    _hostname: str = ""
    _network: NetMode = NetMode.SANDBOX
    _security: SecurityMode = SecurityMode.SANDBOX
    _platform: Platform | None = None
    _extra_hosts: tuple[HostIP, ...] = ()
    _ulimits: tuple[Ulimit, ...] = ()
    _cgroup_parent: str = ""

    # ----------------------------------------------------------------- reading
    @property
    def output(self) -> Output | None:
        """The graph output this state points at; ``None`` for scratch."""
        return self._output

    @property
    def is_scratch(self) -> bool:
        return self._output is None

    @property
    def env(self) -> tuple[str, ...]:
        """The environment as ``KEY=VALUE`` strings, in the order processes get it."""
        return tuple(f"{k}={v}" for k, v in self._env)

    def get_env(self, key: str) -> str | None:
        for k, v in self._env:
            if k == key:
                return v
        return None

    @property
    def cwd(self) -> str:
        return self._cwd

    def get_dir(self) -> str:
        return self._cwd

    def get_user(self) -> str:
        return self._user

    def get_hostname(self) -> str:
        return self._hostname

    def get_network(self) -> NetMode:
        return self._network

    def get_security(self) -> SecurityMode:
        return self._security

    @property
    def platform(self) -> Platform | None:
        """The platform ops built from this state run for (``None``: the marshal default)."""
        return self._platform

    # ----------------------------------------------------------------- deriving
    def _replace(self, **changes: object) -> State:
        """A plain State (never an ExecState) with ``changes`` applied."""
        base = self.root() if isinstance(self, ExecState) else self
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def with_output(self, output: Output | None) -> State:
        """This state's settings pointing at another output."""
        return self._replace(_output=output)

    def with_env(self, key: str, value: str) -> State:
        """Set ``key`` (a replaced key moves to the end, like the Go client)."""
        if not key or "=" in key:
            raise DefinitionError(f"invalid environment variable name {key!r}")
        pairs = (*(p for p in self._env if p[0] != key), (key, value))
        return self._replace(_env=pairs)

    def without_env(self, key: str) -> State:
        return self._replace(_env=tuple(p for p in self._env if p[0] != key))

    def with_cwd(self, path: str) -> State:
        """Set the working directory; a relative path is joined onto the current one."""
        return self._replace(_cwd=paths.with_dir(self._cwd, path))

    def with_user(self, user: str) -> State:
        """``name``, ``uid``, ``name:group`` or ``uid:gid`` for later processes."""
        return self._replace(_user=user)

    def with_hostname(self, hostname: str) -> State:
        return self._replace(_hostname=hostname)

    def with_network(self, mode: NetMode) -> State:
        return self._replace(_network=NetMode(mode))

    def with_security(self, mode: SecurityMode) -> State:
        return self._replace(_security=SecurityMode(mode))

    def with_platform(self, platform: Platform | str) -> State:
        p = Platform.parse(platform) if isinstance(platform, str) else platform
        return self._replace(_platform=p)

    def with_extra_host(self, host: str, ip: str) -> State:
        """Add ``host`` -> ``ip`` to /etc/hosts of later processes (IP written like Go)."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError as exc:
            raise DefinitionError(f"extra host {host}: invalid IP address {ip!r}") from exc
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        hosts = (*self._extra_hosts, HostIP(host, str(addr)))
        return self._replace(_extra_hosts=hosts)

    def with_ulimit(self, name: str, soft: int, hard: int) -> State:
        limits = (*self._ulimits, Ulimit(name, soft, hard))
        return self._replace(_ulimits=limits)

    def with_cgroup_parent(self, cgroup_parent: str) -> State:
        return self._replace(_cgroup_parent=cgroup_parent)

    def with_image_config(self, config: bytes | str) -> State:
        """Apply an OCI image config (JSON): its env (keys not already set), working
        directory and platform, as the Go client does after resolving an image."""
        import json

        try:
            img = json.loads(config)
        except ValueError as exc:
            raise DefinitionError(f"invalid image config: {exc}") from exc
        if not isinstance(img, dict):
            raise DefinitionError("invalid image config: not a JSON object")
        cfg = img.get("config") or {}
        st = self
        for entry in cfg.get("Env") or ():
            key, _, value = str(entry).partition("=")
            if key and st.get_env(key) is None:
                st = st.with_env(key, value)
        if cfg.get("WorkingDir"):
            st = st.with_cwd(str(cfg["WorkingDir"]))
        if img.get("architecture") and img.get("os"):
            variant = str(img.get("variant") or "")
            st = st.with_platform(Platform(str(img["os"]), str(img["architecture"]), variant))
        return st

    # Go-style spellings (llb.State.AddEnv / Dir / User).
    def add_env(self, key: str, value: str) -> State:
        return self.with_env(key, value)

    def dir(self, path: str) -> State:
        return self.with_cwd(path)

    def user(self, user: str) -> State:
        return self.with_user(user)

    # ----------------------------------------------------------------- ops
    def _settings(self) -> dict[str, Any]:
        """Every setting of this State except its output (what a derived State inherits)."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(State) if f.name != "_output"
        }

    def run(
        self,
        command: str | Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        hostname: str | None = None,
        network: NetMode | None = None,
        security: SecurityMode | None = None,
        readonly_rootfs: bool = False,
        secret_env: Sequence[SecretEnv] = (),
        proxy_env: ProxyEnv | None = None,
        meta: OpMeta | None = None,
        custom_name: str | None = None,
        ignore_cache: bool = False,
    ) -> ExecState:
        """Run a process on this state's filesystem.

        ``command`` is an argv list, or a string split into words like the Go client's
        ``llb.Shlex`` (quotes, backslash escapes, ``#`` comments; no expansion).
        ``env``/``cwd``/``user``/... apply to this process only; the returned ExecState keeps
        this state's settings. ``mounts`` are built with ``bind``, ``cache``, ``tmpfs``,
        ``secret`` and ``ssh``.
        """
        from bkcore.llb.execop import ExecOp

        args = shellwords.split(command) if isinstance(command, str) else list(command)
        if not args:
            raise DefinitionError("run: empty command")
        proc = self
        for k, v in (env or {}).items():
            proc = proc.with_env(k, v)
        if cwd is not None:
            proc = proc.with_cwd(cwd)
        if user is not None:
            proc = proc.with_user(user)
        if hostname is not None:
            proc = proc.with_hostname(hostname)
        if network is not None:
            proc = proc.with_network(network)
        if security is not None:
            proc = proc.with_security(security)
        op = ExecOp(
            proc,
            args,
            mounts=mounts,
            readonly_rootfs=readonly_rootfs,
            secret_env=secret_env,
            proxy_env=proxy_env,
            meta=OpMeta.build(meta, custom_name, ignore_cache),
        )
        return ExecState(_output=op.root_output, _exec=op, **self._settings())

    def sh(self, script: str, **options: Unpack[RunOptions]) -> ExecState:
        """``run(["/bin/sh", "-c", script], ...)``: a shell script, same options as ``run``."""
        return self.run(["/bin/sh", "-c", script], **options)

    def file(
        self,
        action: FileAction,
        *,
        meta: OpMeta | None = None,
        custom_name: str | None = None,
        ignore_cache: bool = False,
    ) -> State:
        """Apply a chain of file actions (``mkdir(...).copy(...).rm(...)``) to this state.

        Relative paths are resolved against this state's working directory.
        """
        from bkcore.llb.fileop import FileOp

        op = FileOp(self, action, meta=OpMeta.build(meta, custom_name, ignore_cache))
        return self.with_output(op.output)

    def marshal(
        self,
        *,
        platform: Platform | str | None = None,
        local_unique_id: str | None = None,
        meta: OpMeta | None = None,
        ignore_cache: bool = False,
        daemon_caps: Collection[str] | None = None,
    ) -> Definition:
        """Serialize the graph that produces this state.

        ``platform`` is the default for ops that have none (Go client: the host's);
        ``local_unique_id`` fills ``local.unique`` of local sources without a session
        (random by default, as in the Go client); ``meta``/``ignore_cache`` apply to every op;
        ``daemon_caps`` (the daemon's LLB caps, when known) enable cap-dependent defaults.
        """
        from bkcore.llb.definition import marshal

        p = Platform.parse(platform) if isinstance(platform, str) else platform
        return marshal(
            self._output,
            platform=p,
            local_unique_id=local_unique_id,
            meta=OpMeta.build(meta, None, ignore_cache),
            daemon_caps=daemon_caps,
        )


@dataclass(frozen=True, slots=True)
class ExecState(State):
    """The state after ``run``: the root filesystem, plus access to the other mounts."""

    _exec: ExecOp | None = None

    def root(self) -> State:
        """The root filesystem after the process ran, as a plain State."""
        return State(_output=self._output, **self._settings())

    def get_mount(self, dest: str) -> State:
        """The content of mount ``dest`` after the process ran.

        A writable bind mount gives the new result; a read-only or no-output bind mount
        gives its input unchanged; cache, tmpfs, secret and ssh mounts have no result.
        """
        if self._exec is None:
            raise DefinitionError("get_mount: this state has no process")
        if dest == "/":
            return self.root()
        return self._exec.mount_result(dest)
