"""``bkcore daemon``: serve the Control API of one embedded controller on sockets.

Addresses: ``unix://PATH`` (default :func:`bkcore.config.daemon_socket`, ``/run/bkcore/
bkcore.sock`` as root; the socket is made mode 0660 and a stale one is replaced, a live one is
refused) and ``tcp://HOST:PORT``, which needs ``--tlscert``/``--tlskey`` (with ``--tlscacert``
clients must present a certificate signed by that CA). HTTP/2 with ALPN ``h2`` over TLS.

The TOML config (``--config``, default :func:`bkcore.config.daemon_config_file`, read only if
present) uses BuildKit's ``buildkitd.toml`` names where they exist::

    root = "/var/lib/bkcore"
    registries = "/etc/bkcore/registries.toml"   # registry hosts file for this daemon
    insecure-entitlements = ["network.host", "security.insecure"]
    [grpc]
    address = ["unix:///run/bkcore/bkcore.sock"]
    [grpc.tls]
    cert = "..."; key = "..."; ca = "..."
    [worker]
    name = "runc"
    max-parallelism = 4
    [[worker.gcpolicy]]
    all = false; keepDuration = "48h"; keepBytes = 10000000000; filters = ["type==regular"]

Command-line flags win over the file. An unknown key or a value of the wrong type is one
error line naming the file and the key.

SIGTERM / SIGINT: stop accepting connections, cancel running builds (each unwinds: containers
killed, leases released), wait for the handlers to end, close the controller, remove the
socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bkcore import config
from bkcore.errors import BkError

if TYPE_CHECKING:
    import ssl

    from bkcore.api.server import GCPolicy
    from bkcore.pluginmanager import BkPluginManager

__all__ = [
    "DaemonConfig",
    "DaemonConfigError",
    "Listener",
    "load_config",
    "parse_address",
    "run",
    "serve",
]

SOCKET_MODE = 0o660


class DaemonConfigError(BkError):
    """The daemon's configuration (file or flags) cannot be used."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``bkcore daemon`` runs with (file values overridden by flags)."""

    root: Path
    addresses: tuple[str, ...] = ()
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    worker: str = "runc"
    max_parallelism: int | None = None
    gc_policy: tuple[GCPolicy, ...] = ()
    registries: str = ""
    entitlements: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Listener:
    """One parsed address."""

    scheme: str  # "unix" | "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_address(address: str) -> Listener:
    """``unix:///path`` or ``tcp://host:port`` (DaemonConfigError for anything else)."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise DaemonConfigError(
            f"invalid address {address!r} (want unix://PATH or tcp://HOST:PORT)"
        )
    if scheme == "unix":
        if not rest:
            raise DaemonConfigError(f"invalid address {address!r}: no socket path")
        return Listener("unix", path=os.path.abspath(rest))
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65535:
            raise DaemonConfigError(f"invalid address {address!r}: want tcp://HOST:PORT")
        return Listener("tcp", host=host.strip("[]") or "0.0.0.0", port=int(port))
    raise DaemonConfigError(f"unsupported address scheme {scheme!r} in {address!r}")


def _duration(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise DaemonConfigError(f'{where}: want a duration like "48h" or seconds')
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        from bkcore.cli.prune_cmd import parse_duration

        try:
            return parse_duration(value)
        except BkError as exc:
            raise DaemonConfigError(f"{where}: {exc}") from exc
    raise DaemonConfigError(f'{where}: want a duration like "48h" or seconds')


def _typed(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DaemonConfigError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _check_keys(table: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise DaemonConfigError(f"{where}: unknown key {key!r}")


def load_config(path: Path | None, *, root: str | None = None) -> DaemonConfig:
    """The config from ``path`` (default file only if it exists) on top of the defaults."""
    import tomllib

    from bkcore.api.server import GCPolicy

    explicit = path is not None
    file = path if path is not None else config.daemon_config_file()
    data: dict[str, Any] = {}
    if explicit or file.exists():
        try:
            data = tomllib.loads(file.read_text())
        except OSError as exc:
            raise DaemonConfigError(f"cannot read daemon config {file}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DaemonConfigError(f"{file}: invalid TOML: {exc}") from exc
    where = str(file)
    _check_keys(data, ("root", "registries", "insecure-entitlements", "grpc", "worker"), where)
    out = DaemonConfig(root=Path(root).absolute() if root else config.state_dir())
    if "root" in data and not root:
        out = replace(out, root=Path(_typed(data, "root", str, where)).absolute())
    if "registries" in data:
        out = replace(out, registries=_typed(data, "registries", str, where))
    if "insecure-entitlements" in data:
        ents = _typed(data, "insecure-entitlements", list, where)
        for e in ents:
            if e not in ("network.host", "security.insecure"):
                raise DaemonConfigError(f"{where}: unknown entitlement {e!r}")
        out = replace(out, entitlements=frozenset(ents))
    grpc = data.get("grpc", {})
    if not isinstance(grpc, dict):
        raise DaemonConfigError(f"{where}: [grpc] must be a table")
    _check_keys(grpc, ("address", "tls"), f"{where} [grpc]")
    if "address" in grpc:
        addrs = _typed(grpc, "address", list, f"{where} [grpc]")
        out = replace(out, addresses=tuple(str(a) for a in addrs))
    tls = grpc.get("tls", {})
    _check_keys(tls, ("cert", "key", "ca"), f"{where} [grpc.tls]")
    out = replace(
        out,
        tls_cert=str(tls.get("cert", "")),
        tls_key=str(tls.get("key", "")),
        tls_ca=str(tls.get("ca", "")),
    )
    worker = data.get("worker", {})
    if not isinstance(worker, dict):
        raise DaemonConfigError(f"{where}: [worker] must be a table")
    wwhere = f"{where} [worker]"
    _check_keys(worker, ("name", "max-parallelism", "gcpolicy"), wwhere)
    if "name" in worker:
        out = replace(out, worker=_typed(worker, "name", str, wwhere))
    if "max-parallelism" in worker:
        n = _typed(worker, "max-parallelism", int, wwhere)
        if n < 1:
            raise DaemonConfigError(f"{wwhere}: 'max-parallelism' must be at least 1")
        out = replace(out, max_parallelism=n)
    policies = []
    for i, p in enumerate(worker.get("gcpolicy", [])):
        pwhere = f"{where} [[worker.gcpolicy]] #{i + 1}"
        if not isinstance(p, dict):
            raise DaemonConfigError(f"{pwhere}: must be a table")
        _check_keys(p, ("all", "keepDuration", "keepBytes", "filters"), pwhere)
        policies.append(
            GCPolicy(
                all=bool(_typed(p, "all", bool, pwhere)) if "all" in p else False,
                keep_duration=_duration(p["keepDuration"], f"{pwhere} keepDuration")
                if "keepDuration" in p
                else 0.0,
                keep_bytes=_typed(p, "keepBytes", int, pwhere) if "keepBytes" in p else 0,
                filters=tuple(str(f) for f in _typed(p, "filters", list, pwhere))
                if "filters" in p
                else (),
            )
        )
    return replace(out, gc_policy=tuple(policies))


def _server_ssl(cfg: DaemonConfig) -> ssl.SSLContext:
    import ssl

    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        if cfg.tls_ca:
            ctx.load_verify_locations(cfg.tls_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise DaemonConfigError(f"cannot load the daemon's TLS files: {exc}") from exc
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _bind_unix(path: str) -> socket.socket:
    """A listening unix socket at ``path`` with mode 0660 from the start."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o711, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise DaemonConfigError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: left by a daemon that died
        else:
            raise DaemonConfigError(f"another daemon is listening on unix://{path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise DaemonConfigError(f"cannot listen on unix://{path}: {exc.strerror}") from exc
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _warn(message: str) -> None:
    print(f"bkcore daemon: {message}", file=sys.stderr, flush=True)


def _session_handler(controller: Any) -> Callable[[Any], Awaitable[None]] | None:
    """``Control.Session`` over the gRPC session transport, when that module is installed:
    the client's session is registered in the controller's session manager."""
    try:
        from bkcore.session.grpc_transport import handle_session
    except ImportError:
        return None
    sessions = controller.engine.sessions

    async def handler(stream: Any) -> None:
        await handle_session(stream, sessions)

    return handler


async def serve(
    cfg: DaemonConfig,
    plugins: BkPluginManager,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[Sequence[str]], None] | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT); then shut down gracefully."""
    from grpclib.server import Server

    from bkcore.api.codec import GoCodec
    from bkcore.api.errors import StatusDetailsCodec
    from bkcore.api.gateway import Forwarders, LLBBridgeServicer
    from bkcore.api.server import ControlServicer, DaemonController, DaemonSettings

    addresses = cfg.addresses or (f"unix://{config.daemon_socket()}",)
    listeners = [parse_address(a) for a in addresses]
    for lst in listeners:
        if lst.scheme == "tcp" and not (cfg.tls_cert and cfg.tls_key):
            raise DaemonConfigError(f"{lst} needs --tlscert and --tlskey (no plain TCP)")
    tls = _server_ssl(cfg) if any(lst.scheme == "tcp" for lst in listeners) else None
    if cfg.registries:
        from bkcore.registry_client.hosts import CONFIG_ENV

        os.environ[CONFIG_ENV] = os.path.abspath(cfg.registries)
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    sockets: list[str] = []
    servers: list[Server] = []
    try:
        async with DaemonController(
            plugins, cfg.root, worker=cfg.worker, parallelism=cfg.max_parallelism
        ) as controller:
            settings = DaemonSettings(
                root=cfg.root,
                gc_policy=cfg.gc_policy,
                allowed_entitlements=cfg.entitlements,
            )
            forwarders = Forwarders()
            servicer = ControlServicer(
                controller,
                settings,
                session_handler=_session_handler(controller),
                forwarders=forwarders,
            )
            bridge = LLBBridgeServicer(controller, forwarders)
            try:
                async with asyncio.TaskGroup() as tasks:
                    gc = tasks.create_task(servicer.run_gc(on_error=_warn))
                    try:
                        for lst in listeners:
                            server = Server(
                                [servicer, bridge],
                                codec=GoCodec(),
                                status_details_codec=StatusDetailsCodec(),
                            )
                            if lst.scheme == "unix":
                                sock = _bind_unix(lst.path)
                                sockets.append(lst.path)
                                await server.start(sock=sock)
                            else:
                                try:
                                    await server.start(lst.host, lst.port, ssl=tls)
                                except OSError as exc:
                                    raise DaemonConfigError(
                                        f"cannot listen on {lst}: {exc.strerror}"
                                    ) from exc
                            servers.append(server)
                        if ready is not None:
                            ready([str(lst) for lst in listeners])
                        await stop.wait()
                    finally:
                        for server in servers:
                            server.close()
                        await servicer.cancel_builds()
                        for server in servers:
                            await server.wait_closed()
                        gc.cancel()
            except BaseExceptionGroup as group:  # one error line, not a group
                raise group.exceptions[0] from None
    finally:
        for path in sockets:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for sig in installed:
            loop.remove_signal_handler(sig)


def run(cfg: DaemonConfig, plugins: BkPluginManager) -> int:
    """Blocking entry point of ``bkcore daemon``: prints the addresses once it listens."""

    def ready(addresses: Sequence[str]) -> None:
        for address in addresses:
            print(f"bkcore daemon listening on {address}", file=sys.stderr, flush=True)

    asyncio.run(serve(cfg, plugins, ready=ready))
    print("bkcore daemon stopped", file=sys.stderr, flush=True)
    return 0
