"""``bkcore daemon``: serve the Control API of one embedded controller on sockets.

Addresses: ``unix://PATH`` (default :func:`bkcore.config.daemon_socket`, ``/run/bkcore/
bkcore.sock`` as root; the socket is made mode 0660 and a stale one is replaced, a live one is
refused) and ``tcp://HOST:PORT``, which needs ``--tlscert``/``--tlskey`` (with ``--tlscacert``
clients must present a certificate signed by that CA). HTTP/2 with ALPN ``h2`` over TLS.

The TOML config (``--config``, default :func:`bkcore.config.daemon_config_file`, read only if
present) is read by :mod:`bkcore.api.daemonconfig`; command-line flags win over the file.

GC (:mod:`bkcore.cache.gc`): a pass at start-up and after builds end (throttled), by the
configured policies or BuildKit's default ones (:func:`gc_policies`); ``gc = false`` turns it
off.

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
from typing import TYPE_CHECKING, Any

from bkcore import config
from bkcore.api.address import DaemonConfigError, Listener, parse_address
from bkcore.api.daemonconfig import DaemonConfig, gc_policies, load_config

if TYPE_CHECKING:
    import ssl

    from bkcore.pluginmanager import BkPluginManager

__all__ = [
    "DaemonConfig",
    "DaemonConfigError",
    "Listener",
    "gc_policies",
    "load_config",
    "parse_address",
    "run",
    "serve",
]

SOCKET_MODE = 0o660


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


def _bind_unix(path: str, uid: int | None = None, gid: int | None = None) -> socket.socket:
    """A listening unix socket at ``path`` with mode 0660 from the start, owned by ``uid``
    and ``gid`` when given (``--group``: the group whose members may connect)."""
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
    try:
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        os.chmod(path, SOCKET_MODE)
    except OSError as exc:
        sock.close()
        os.unlink(path)
        raise DaemonConfigError(f"cannot set the owner of unix://{path}: {exc.strerror}") from exc
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
    from bkcore.api.history import BuildHistory
    from bkcore.api.server import ControlServicer, DaemonSettings
    from bkcore.cache.gc import GarbageCollector
    from bkcore.controller import Controller

    addresses = cfg.addresses or (f"unix://{config.daemon_socket()}",)
    policies = gc_policies(cfg)

    def debug_pass(removed: Sequence[Any]) -> None:
        freed = sum(r.size for r in removed)
        _warn(f"gc: removed {len(removed)} records, {freed} bytes")

    listeners = [parse_address(a) for a in addresses]
    for lst in listeners:
        if lst.scheme == "tcp" and not (cfg.tls_cert and cfg.tls_key):
            raise DaemonConfigError(f"{lst} needs --tlscert and --tlskey (no plain TCP)")
    tls = _server_ssl(cfg) if any(lst.scheme == "tcp" for lst in listeners) else None
    if cfg.registries:
        from bkcore.registry_client.hosts import CONFIG_ENV

        os.environ[CONFIG_ENV] = os.path.abspath(cfg.registries)
    if cfg.registry_hosts is not None:
        from bkcore.registry_client.hosts import set_process_hosts

        set_process_hosts(cfg.registry_hosts)
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
        async with Controller(
            plugins, cfg.root, worker=cfg.worker, parallelism=cfg.max_parallelism
        ) as controller:
            settings = DaemonSettings(
                root=cfg.root,
                gc_policy=policies,
                allowed_entitlements=cfg.entitlements,
            )
            collector = GarbageCollector(
                cfg.root,
                policies,
                interval=cfg.gc_interval,
                on_pass=debug_pass if cfg.debug else None,
                on_error=_warn,
            )
            forwarders = Forwarders()
            servicer = ControlServicer(
                controller,
                settings,
                session_handler=_session_handler(controller),
                forwarders=forwarders,
                history=await asyncio.to_thread(
                    BuildHistory,
                    cfg.root,
                    max_entries=cfg.history_max_entries,
                    max_age=cfg.history_max_age,
                ),
            )
            bridge = LLBBridgeServicer(controller, forwarders)
            try:
                async with asyncio.TaskGroup() as tasks:
                    gc = tasks.create_task(collector.run())
                    controller.add_build_listener(collector.request)
                    try:
                        for lst in listeners:
                            server = Server(
                                [servicer, bridge],
                                codec=GoCodec(),
                                status_details_codec=StatusDetailsCodec(),
                            )
                            if lst.scheme == "unix":
                                sock = _bind_unix(lst.path, cfg.socket_uid, cfg.socket_gid)
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
