"""Client of a bkcore (or BuildKit) daemon's Control service over grpclib.

``async with Client(address) as c:`` then :meth:`Client.list_workers`, :meth:`Client.info`,
:meth:`Client.disk_usage`, :meth:`Client.prune`, :meth:`Client.solve` and
:meth:`Client.status`. The address is ``unix://PATH`` or ``tcp://HOST:PORT`` (TLS when
``tls_ca``/``tls_cert`` are given); :func:`default_address` is ``$BKCORE_HOST``, else the
daemon's default socket. A failed call raises the :class:`~bkcore.errors.BkError` that
:mod:`bkcore.api.errors` rebuilds from the status; a daemon that cannot be reached is one
:class:`DaemonUnavailable` line naming the address.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bkcore.errors import BkError

if TYPE_CHECKING:
    import ssl

    from grpclib.client import Channel

    from bkcore.api.pb import control as cpb
    from bkcore.api.pb import worker as wpb

__all__ = ["HOST_ENV", "Client", "DaemonUnavailable", "default_address"]

HOST_ENV = "BKCORE_HOST"
#: The client's send/receive limit, as buildctl's (control.md §1).
MAX_MESSAGE = 16 << 20


class DaemonUnavailable(BkError):
    """The daemon at an address cannot be reached."""


def default_address() -> str:
    """``$BKCORE_HOST``, else ``unix://`` + the daemon's default socket."""
    from bkcore import config

    return os.environ.get(HOST_ENV) or f"unix://{config.daemon_socket()}"


class Client:
    """One connection to a daemon; every method is one Control call."""

    def __init__(
        self,
        address: str | None = None,
        *,
        tls_ca: str = "",
        tls_cert: str = "",
        tls_key: str = "",
        server_name: str = "",
    ) -> None:
        self.address = address or default_address()
        self._tls = (tls_ca, tls_cert, tls_key)
        self._server_name = server_name
        self._channel: Channel | None = None

    def _ssl(self) -> ssl.SSLContext | None:
        tls_ca, tls_cert, tls_key = self._tls
        if not (tls_ca or tls_cert):
            return None
        import ssl

        try:
            ctx = ssl.create_default_context(cafile=tls_ca or None)
            if tls_cert:
                ctx.load_cert_chain(tls_cert, tls_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise BkError(f"cannot load TLS files for {self.address}: {exc}") from exc
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def channel(self) -> Channel:
        """The grpclib channel (opened on first use; the connection itself is lazy)."""
        if self._channel is not None:
            return self._channel
        from grpclib.client import Channel
        from grpclib.config import Configuration

        from bkcore.api.address import parse_address
        from bkcore.api.codec import GoCodec
        from bkcore.api.errors import StatusDetailsCodec

        where = parse_address(self.address)
        codec = GoCodec()
        details = StatusDetailsCodec()
        if where.scheme == "unix":
            self._channel = Channel(path=where.path, codec=codec, status_details_codec=details)
        else:
            config = None
            if self._server_name:
                config = Configuration(ssl_target_name_override=self._server_name)
            self._channel = Channel(
                where.host,
                where.port,
                ssl=self._ssl(),
                codec=codec,
                status_details_codec=details,
                config=config,
            )
        return self._channel

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def __aenter__(self) -> Client:
        self.channel()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _error(self, exc: BaseException) -> BkError:
        from grpclib.exceptions import GRPCError, StreamTerminatedError

        from bkcore.api.errors import from_grpc_error

        if isinstance(exc, GRPCError):
            return from_grpc_error(exc)
        if isinstance(exc, StreamTerminatedError):
            return DaemonUnavailable(f"the daemon at {self.address} closed the connection: {exc}")
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            return DaemonUnavailable(f"cannot connect to the daemon at {self.address}: {reason}")
        raise exc

    async def _unary(self, path: str, request: Any, response_type: Any) -> Any:
        from grpclib.const import Cardinality

        try:
            async with self.channel().request(
                path, Cardinality.UNARY_UNARY, type(request), response_type
            ) as stream:
                await stream.send_message(request, end=True)
                reply = await stream.recv_message()
                await stream.recv_trailing_metadata()
        except Exception as exc:
            raise self._error(exc) from exc
        return reply

    async def _stream(
        self, path: str, request: Any, response_type: Any, *, on_headers: Any = None
    ) -> AsyncIterator[Any]:
        from grpclib.const import Cardinality

        try:
            async with self.channel().request(
                path, Cardinality.UNARY_STREAM, type(request), response_type
            ) as stream:
                await stream.send_message(request, end=True)
                if on_headers is not None:
                    await stream.recv_initial_metadata()
                    on_headers(stream.initial_metadata or {})
                async for message in stream:
                    yield message
        except Exception as exc:
            raise self._error(exc) from exc

    # -- Control ------------------------------------------------------------------------------

    async def list_workers(self, filters: Sequence[str] = ()) -> list[wpb.WorkerRecord]:
        from bkcore.api import methods
        from bkcore.api.pb import control as cpb

        reply = await self._unary(
            methods.CONTROL_LIST_WORKERS,
            cpb.ListWorkersRequest(filter=list(filters)),
            cpb.ListWorkersResponse,
        )
        return list(reply.record)

    async def info(self) -> wpb.BuildkitVersion:
        from bkcore.api import methods
        from bkcore.api.pb import control as cpb

        reply = await self._unary(methods.CONTROL_INFO, cpb.InfoRequest(), cpb.InfoResponse)
        version: wpb.BuildkitVersion = reply.buildkit_version
        return version

    async def disk_usage(self, filters: Sequence[str] = ()) -> list[cpb.UsageRecord]:
        from bkcore.api import methods
        from bkcore.api.pb import control as cpb

        reply = await self._unary(
            methods.CONTROL_DISK_USAGE,
            cpb.DiskUsageRequest(filter=list(filters)),
            cpb.DiskUsageResponse,
        )
        return list(reply.record)

    async def prune(
        self,
        filters: Sequence[str] = (),
        *,
        all: bool = False,
        keep_duration: float = 0.0,
        keep_bytes: int = 0,
    ) -> list[cpb.UsageRecord]:
        """Prune; ``keep_duration`` in seconds (sent as nanoseconds), ``keep_bytes`` bytes."""
        from bkcore.api import methods
        from bkcore.api.pb import control as cpb

        request = cpb.PruneRequest(
            filter=list(filters),
            all=all,
            keep_duration=int(keep_duration * 1e9),
            keep_bytes=int(keep_bytes),
        )
        return [r async for r in self._stream(methods.CONTROL_PRUNE, request, cpb.UsageRecord)]

    async def solve(self, request: cpb.SolveRequest) -> cpb.SolveResponse:
        from bkcore.api import methods
        from bkcore.api.pb import control as cpb

        reply: cpb.SolveResponse = await self._unary(
            methods.CONTROL_SOLVE, request, cpb.SolveResponse
        )
        return reply

    def status(self, ref: str, *, on_headers: Any = None) -> AsyncIterator[cpb.StatusResponse]:
        """The Status stream of the build ``ref`` (may be started before its Solve)."""
        from bkcore.api import methods
        from bkcore.api.pb import control as cpb

        return self._stream(
            methods.CONTROL_STATUS,
            cpb.StatusRequest(ref=ref),
            cpb.StatusResponse,
            on_headers=on_headers,
        )
