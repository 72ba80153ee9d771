"""Sessions over the wire: the ``Control.Session`` tunnel (session.md §1-4, §8).

The client opens ``/moby.buildkit.v1.Control/Session`` with the session headers (§2); the
concatenated ``BytesMessage.data`` of each direction carries an inner HTTP/2 connection on
which the **client is the gRPC server** (it serves its attachables and
``grpc.health.v1.Health``) and the **daemon is the gRPC client** (§4). Both inner ends are
grpclib protocols attached to :class:`_Tunnel`, an ``asyncio.Transport`` whose writes become
outer messages and whose reads are fed from them.

* Client side: :func:`attach_session` (open the stream on a grpclib ``Channel`` and serve a
  :class:`~bkcore.session.Session` until the context exits) or :func:`serve_tunnel` (serve on
  an already opened outer stream).
* Daemon side: :func:`handle_session` (the ``Control.Session`` servicer: reads the headers,
  registers a :class:`TunnelCaller` in the :class:`~bkcore.session.SessionManager`, polls
  Health, unregisters when the stream ends) and :func:`session_handlers` (its grpclib
  mapping, for mounting in the daemon's server).

:class:`TunnelCaller` implements the same :class:`~bkcore.session.Caller` interface as the
in-process transport, so file sync, file send, auth, secrets and ssh are transport-agnostic.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from bkcore.errors import SessionError
from bkcore.session.filesync.packets import BytesMessage as RawBytes
from bkcore.session.health import HEALTH_CHECK, HealthCheckRequest, HealthCheckResponse
from bkcore.session.session import (
    HEADER_METHOD,
    HEADER_NAME,
    HEADER_SHARED_KEY,
    HEADER_UUID,
    Session,
)
from bkcore.session.transport import (
    CallError,
    ClientStream,
    Handler,
    Metadata,
    MetadataLike,
    Status,
    StreamFunc,
    UnaryFunc,
    as_metadata,
)

if TYPE_CHECKING:
    import grpclib.client
    import grpclib.const
    import grpclib.server
    from grpclib.protocol import H2Protocol

    from bkcore.session.manager import SessionManager

__all__ = [
    "CONTROL_SESSION",
    "HEALTH_INTERVAL",
    "MAX_MESSAGE_SIZE",
    "TUNNEL_CHUNK",
    "SessionService",
    "TunnelCaller",
    "attach_session",
    "handle_session",
    "health_loop",
    "serve_tunnel",
    "session_handlers",
]

M = TypeVar("M")
_PREFIX = struct.Struct(">?I").pack  # gRPC message prefix: compressed flag, length

CONTROL_SESSION = "/moby.buildkit.v1.Control/Session"
# Largest message either inner end accepts (gRPC-Go's default receive limit); raw byte
# streams (FileSend file output, ssh agent) are split below it when sent.
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
# Largest ``BytesMessage`` sent on the outer stream, and the split size of raw byte messages.
TUNNEL_CHUNK = 1024 * 1024
# Largest tunnel chunk per outer message: with its BytesMessage and gRPC headers (9 bytes) it
# fits one outer HTTP/2 frame of TUNNEL_CHUNK bytes when the peer accepts those.
_OUTER_CHUNK = TUNNEL_CHUNK - 64
# Queued tunnel bytes above which the inner HTTP/2 connection is paused (and resumed below
# a quarter of it): back-pressure from the outer stream to the inner writers.
_HIGH_WATER = 4 * TUNNEL_CHUNK
# Daemon-side health polling (session.md §4).
HEALTH_INTERVAL = 5.0
HEALTH_TIMEOUT = 30.0


# -- codec and metadata ----------------------------------------------------------------------


def _make_codec() -> Any:
    from grpclib.encoding.base import CodecBase

    class TunnelCodec(CodecBase):
        """Encodes any message with ``bytes(msg)`` (betterproto messages as Go does) and
        decodes with ``message_type.FromString``; refuses messages over the size limit."""

        __content_subtype__ = "proto"

        def encode(self, message: Any, message_type: Any) -> bytes:
            # a betterproto message exists only once betterproto is imported: the session's
            # own messages (filesync packets, health) are hand-written and never load it
            bp = sys.modules.get("betterproto")
            if bp is not None and isinstance(message, bp.Message):
                from bkcore.api.codec import encode

                data = encode(message)
            else:
                data = bytes(message)
            if len(data) > MAX_MESSAGE_SIZE:
                from grpclib.const import Status as GStatus
                from grpclib.exceptions import GRPCError

                raise GRPCError(
                    GStatus.RESOURCE_EXHAUSTED,
                    f"message of {len(data)} bytes exceeds the limit of {MAX_MESSAGE_SIZE}",
                )
            return data

        def decode(self, data: bytes, message_type: Any) -> Any:
            if len(data) > MAX_MESSAGE_SIZE:
                from grpclib.const import Status as GStatus
                from grpclib.exceptions import GRPCError

                raise GRPCError(
                    GStatus.RESOURCE_EXHAUSTED,
                    f"received message of {len(data)} bytes exceeds the limit "
                    f"of {MAX_MESSAGE_SIZE}",
                )
            return message_type.FromString(data)

    return TunnelCodec()


def _from_grpclib(md: Any) -> Metadata:
    """grpclib's decoded request metadata (a MultiDict) as :class:`Metadata` (text only)."""
    if md is None:
        return Metadata()
    return Metadata((k, v) for k, v in md.items() if isinstance(v, str))


def _to_grpclib(md: MetadataLike) -> list[tuple[str, str]]:
    """Pairs grpclib will send: lower-case keys; empty values dropped (grpclib refuses them,
    and a missing header reads as empty on the other side)."""
    return [(k.lower(), v) for k, v in as_metadata(md) if v != ""]


def _split(message: Any) -> list[Any]:
    """A raw byte message larger than :data:`TUNNEL_CHUNK` as several (their boundaries mean
    nothing on the byte streams that use them)."""
    if isinstance(message, RawBytes) and len(message.data) > TUNNEL_CHUNK:
        data = memoryview(message.data)
        return [
            RawBytes(bytes(data[i : i + TUNNEL_CHUNK])) for i in range(0, len(data), TUNNEL_CHUNK)
        ]
    return [message]


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


# Queued message bytes of one inner stream above which its senders wait for the flusher.
_OUTBOX_HIGH = TUNNEL_CHUNK


class _Outbox:
    """The sending half of one inner gRPC stream.

    ``send`` frames a message (gRPC's 5-byte prefix, the codec's bytes) and queues it; one
    flusher task writes everything queued since its last write as a single HTTP/2 DATA write.
    The messages on the wire are the same, in the same order, but a burst of small packets
    (a listing's STATs, the empty DATA ending each file, REQs) costs one frame and one h2
    event on each side instead of one per message -- and several tasks sending on one stream
    (diffcopy's listing and file readers) can never interleave the frames of two messages.
    Senders wait only while more than :data:`_OUTBOX_HIGH` bytes are queued.

    The flusher is started by the first ``send`` and belongs to the stream: :meth:`drain`
    waits until everything is written, :meth:`close` stops it (both are called before the
    stream's scope ends). A write error is kept and raised by the next ``send``/``drain``.
    """

    def __init__(
        self, grpc_stream: Any, codec: Any, start: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self._grpc = grpc_stream
        self._codec = codec
        self._start = start
        self._parts: list[bytes] = []
        self._size = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    async def send(self, message: Any) -> None:
        if self.error is not None:
            raise self.error
        encode = self._codec.encode
        parts = self._parts
        for part in _split(message):
            data = encode(part, None)
            parts.append(_PREFIX(0, len(data)))
            parts.append(data)
            self._size += len(data) + 5
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        while self._size > _OUTBOX_HIGH and self.error is None:
            self._room.clear()
            await self._room.wait()
        if self.error is not None:
            raise self.error

    async def _run(self) -> None:
        h2stream = self._grpc._stream
        try:
            if self._start is not None:
                await self._start()
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._parts:
                    data = b"".join(self._parts) if len(self._parts) > 1 else self._parts[0]
                    self._parts = []
                    self._size = 0
                    self._room.set()
                    wrapper = getattr(self._grpc, "_wrapper", None)
                    if wrapper is not None:
                        with wrapper:
                            await h2stream.send_data(data)
                    else:
                        await h2stream.send_data(data)
                self._idle.set()
        except asyncio.CancelledError:
            if self.error is None:
                self.error = _OutboxClosed()
            raise
        except Exception as exc:
            self.error = exc
        finally:
            self._parts = []
            self._size = 0
            self._room.set()
            self._idle.set()

    async def drain(self) -> None:
        """Wait until every queued message is written; raise the write error, if any."""
        if self._task is not None and not self._task.done():
            await self._idle.wait()
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        """Stop the flusher (queued messages not yet written are dropped)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class _OutboxClosed(Exception):
    """A send after the stream's scope ended."""


class _Inbox:
    """The receiving half of one inner gRPC stream.

    Takes each received DATA frame from grpclib's stream buffer whole (acknowledging it for
    flow control, as grpclib does) and cuts every gRPC message it holds in one pass, instead
    of two buffer reads per message (for 10,000 STAT packets in a few frames, most of the
    cost of receiving them). ``recv`` returns the next decoded message, ``None`` at the end of
    the stream; a stream that ends inside a message is a protocol error.
    """

    __slots__ = ("_buf", "_codec", "_grpc", "_pending", "_pos", "_type")

    def __init__(self, grpc_stream: Any, codec: Any, recv_type: Any) -> None:
        self._grpc = grpc_stream
        self._codec = codec
        self._type = recv_type
        self._buf = bytearray()
        self._pos = 0
        self._pending: deque[Any] = deque()

    def _cut(self) -> None:
        """Decode every complete message in the buffer into ``_pending``."""
        buf, pos, end = self._buf, self._pos, len(self._buf)
        decode, rtype, pending = self._codec.decode, self._type, self._pending
        while end - pos >= 5:
            n = int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if buf[pos] or n > MAX_MESSAGE_SIZE:
                # refused before its bytes are buffered (grpclib would wait for all of them)
                from grpclib.const import Status as GStatus
                from grpclib.exceptions import GRPCError

                if buf[pos]:
                    raise GRPCError(GStatus.INTERNAL, "compressed messages are not supported")
                raise GRPCError(
                    GStatus.RESOURCE_EXHAUSTED,
                    f"received message of {n} bytes exceeds the limit of {MAX_MESSAGE_SIZE}",
                )
            if end - pos - 5 < n:
                break
            pending.append(decode(bytes(buf[pos + 5 : pos + 5 + n]), rtype))
            pos += 5 + n
        if pos == end:
            buf.clear()
            pos = 0
        elif pos > 1 << 20:
            del buf[:pos]
            pos = 0
        self._pos = pos

    async def _fill(self) -> bool:
        """Append the next received frame's data; False at the end of the stream."""
        h2buf = self._grpc._stream.buffer
        if h2buf._acked_size:  # read by grpclib before the inbox took over
            while h2buf._acked:
                self._buf += h2buf._acked.popleft().data
            h2buf._acked_size = 0
            return True
        while True:
            if h2buf._eof and h2buf._unacked.empty():
                return False
            data, size, ack = await h2buf._unacked.get()
            if ack:
                h2buf._ack_callback(ack)
            if size:
                self._buf += data
                return True
            # an empty DATA frame, or the end-of-stream marker: check again

    async def recv(self) -> Any | None:
        pending = self._pending
        while not pending:
            if not await self._fill():
                if len(self._buf) > self._pos:
                    from grpclib.exceptions import ProtocolError

                    raise ProtocolError("stream ended inside a message")
                return None
            self._cut()
        return pending.popleft()


# -- the tunnel ------------------------------------------------------------------------------

_REPR_PATCHED = False


def _bounded_frame_repr() -> None:
    """h2 4.4 formats ``repr(frame)`` of every received frame for a trace log even when
    nothing logs, and hyperframe's repr hex-encodes the whole payload before keeping 20
    characters: ~20% of the CPU of a bulk transfer through the tunnel (two HTTP/2 layers).
    Replace that helper with one giving the same text from the first 11 bytes only."""
    global _REPR_PATCHED
    if _REPR_PATCHED:
        return
    import binascii

    import hyperframe.frame

    def raw_data_repr(data: bytes | None) -> str:
        if not data:
            return "None"
        r = binascii.hexlify(bytes(data[:11])).decode("ascii")
        if len(r) > 20:
            r = r[:20] + "..."
        return "<hex:" + r + ">"

    hyperframe.frame._raw_data_repr = raw_data_repr
    _REPR_PATCHED = True


def _accept_large_frames(connection: Any) -> None:
    """Advertise ``SETTINGS_MAX_FRAME_SIZE`` = :data:`TUNNEL_CHUNK` on a grpclib connection
    (once per connection). Accepting frames up to 1 MiB (as Go's session server does on the
    inner connection, session.md §4) lets a bkcore peer send a tunnel chunk or a 32 KiB
    DATA packet in one frame: the 16 KiB default costs a frame header, an h2 event and a
    buffer hop per 16 KiB on both layers. A peer that keeps sending 16 KiB frames (grpc-go
    does) is unaffected."""
    if connection is None or getattr(connection, "_bk_large_frames", False):
        return
    from h2.settings import SettingCodes

    h2conn: Any = getattr(connection, "_connection", None)
    if h2conn is None:
        return
    connection._bk_large_frames = True
    h2conn.update_settings({SettingCodes.MAX_FRAME_SIZE: TUNNEL_CHUNK})
    connection.flush()


def _stream_connection(stream: Any) -> Any:
    """The grpclib ``Connection`` under a grpclib client or server stream (None for others)."""
    return getattr(getattr(stream, "_stream", None), "connection", None)


class _Tunnel(asyncio.Transport):
    """The transport of one inner HTTP/2 connection, carried in outer ``BytesMessage``s.

    ``write`` queues bytes (the inner protocol is paused while too many are queued);
    :meth:`take` hands them to the outer stream in chunks of at most :data:`TUNNEL_CHUNK`;
    :meth:`feed` passes received bytes to the protocol; :meth:`lost` ends the connection.
    """

    def __init__(self) -> None:
        super().__init__()
        _bounded_frame_repr()
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._lost = False
        self._paused = False
        self._protocol: H2Protocol | None = None

    def attach(self, protocol: H2Protocol) -> None:
        self._protocol = protocol
        protocol.connection_made(self)
        _accept_large_frames(protocol.connection)

    # asyncio.Transport
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._chunks.append(bytes(data))
        self._queued += len(data)
        self._wakeup.set()
        if not self._paused and self._queued > _HIGH_WATER and self._protocol is not None:
            self._paused = True
            self._protocol.pause_writing()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def can_write_eof(self) -> bool:
        return False

    # tunnel side
    async def take(self) -> bytes | None:
        """The next chunk of written bytes; ``None`` once the transport is closed."""
        while not self._chunks:
            if self._closing:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        first = self._chunks.popleft()
        if len(first) > _OUTER_CHUNK:
            self._chunks.appendleft(first[_OUTER_CHUNK:])
            out = first[:_OUTER_CHUNK]
        else:
            parts = [first]
            size = len(first)
            while self._chunks and size + len(self._chunks[0]) <= _OUTER_CHUNK:
                nxt = self._chunks.popleft()
                parts.append(nxt)
                size += len(nxt)
            out = b"".join(parts) if len(parts) > 1 else first
        self._queued -= len(out)
        if self._paused and self._queued <= _HIGH_WATER // 4 and self._protocol is not None:
            self._paused = False
            self._protocol.resume_writing()
        return out

    def feed(self, data: bytes) -> None:
        if not self._lost and data and self._protocol is not None:
            self._protocol.data_received(data)

    def lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self.close()
        if self._protocol is not None:
            self._protocol.connection_lost(None)


async def _pump_out(tunnel: _Tunnel, send: Callable[[bytes], Awaitable[None]]) -> None:
    while (chunk := await tunnel.take()) is not None:
        await send(chunk)


async def _pump_in(tunnel: _Tunnel, recv: Callable[[], Awaitable[bytes | None]]) -> None:
    while (data := await recv()) is not None:
        tunnel.feed(data)


async def _first_done(*coros: Awaitable[Any]) -> None:
    """Run ``coros`` until the first finishes, cancel the rest and wait for them; re-raise
    the first one's error (none of the tasks outlive this call)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


# -- client side: serve a Session inside the tunnel ------------------------------------------


class _WireServerStream:
    """A :class:`~bkcore.session.ServerStream` over a grpclib server stream."""

    def __init__(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        self._stream = stream
        self._metadata = _from_grpclib(stream.metadata)
        self.outbox = _Outbox(stream, stream._codec, self._start)
        self._inbox = _Inbox(stream, stream._codec, stream._recv_type)

    async def _start(self) -> None:
        if not self._stream._send_initial_metadata_done:
            await self._stream.send_initial_metadata()

    @property
    def metadata(self) -> Metadata:
        return self._metadata

    async def recv(self) -> Any | None:
        return await self._inbox.recv()

    async def send(self, message: Any) -> None:
        await self.outbox.send(message)


def _grpc_error(exc: Exception) -> Exception:
    from grpclib.const import Status as GStatus
    from grpclib.exceptions import GRPCError

    if isinstance(exc, GRPCError):
        return exc
    if isinstance(exc, CallError):
        return GRPCError(GStatus(int(exc.code)), exc.message)
    return GRPCError(GStatus.UNKNOWN, _first_line(exc))


class _ServedSession:
    """A session's handlers as a grpclib service (``__mapping__``)."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = dict(handlers)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        from grpclib.const import Cardinality
        from grpclib.const import Handler as GHandler

        out: dict[str, GHandler] = {}
        for method, h in self._handlers.items():
            if h.kind == "unary":
                out[method] = GHandler(
                    self._unary(h.func),  # type: ignore[arg-type]
                    Cardinality.UNARY_UNARY,
                    h.request_type,
                    h.response_type,
                )
            else:
                out[method] = GHandler(
                    self._stream(h.func),  # type: ignore[arg-type]
                    Cardinality.STREAM_STREAM,
                    h.request_type,
                    h.response_type,
                )
        return out

    @staticmethod
    def _unary(func: UnaryFunc) -> Callable[[Any], Awaitable[None]]:
        async def serve(stream: grpclib.server.Stream[Any, Any]) -> None:
            request = await stream.recv_message()
            try:
                response = await func(request, _from_grpclib(stream.metadata))
            except Exception as exc:
                raise _grpc_error(exc) from None
            await stream.send_message(response)

        return serve

    @staticmethod
    def _stream(func: StreamFunc) -> Callable[[Any], Awaitable[None]]:
        async def serve(stream: grpclib.server.Stream[Any, Any]) -> None:
            wire = _WireServerStream(stream)
            try:
                try:
                    await func(wire)
                except Exception:
                    # what the handler sent before failing (an ERR packet) goes first
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1.0):
                            await wire.outbox.drain()
                    raise
                await wire.outbox.drain()
            except Exception as exc:
                raise _grpc_error(exc) from None
            finally:
                await wire.outbox.close()

        return serve


async def serve_tunnel(outer: grpclib.client.Stream[Any, Any], session: Session) -> None:
    """Serve ``session``'s methods on an opened ``Control.Session`` stream (after
    ``send_request``) until the daemon ends it; every task is gone when this returns."""
    from grpclib.server import Server

    server = Server([_ServedSession(session.handlers())], codec=_make_codec())
    protocol = server._protocol_factory()
    tunnel = _Tunnel()
    tunnel.attach(protocol)

    wire = _WireClientStream(outer, CONTROL_SESSION, session.id, coalesce=False)

    async def send(chunk: bytes) -> None:
        await wire.send(RawBytes(chunk))

    async def recv() -> bytes | None:
        msg = await wire.recv()
        return None if msg is None else bytes(msg.data)

    try:
        await _first_done(_pump_in(tunnel, recv), _pump_out(tunnel, send))
    finally:
        tunnel.lost()
        handler: Any = protocol.handler
        await handler.wait_closed()


@asynccontextmanager
async def attach_session(
    channel: grpclib.client.Channel, session: Session
) -> AsyncIterator[asyncio.Task[None]]:
    """Open ``Control.Session`` on ``channel`` for ``session`` and serve it while the context
    is active (yields the serving task: it ends when the daemon ends the session). On exit
    the stream is half-closed and the daemon's end of it awaited (session.md §4 Closing)."""
    from grpclib.const import Cardinality

    # BytesMessage{bytes data = 1} in its hand-written form: the same bytes as the
    # generated class, decoded without betterproto's per-message cost
    async with channel.request(
        CONTROL_SESSION,
        Cardinality.STREAM_STREAM,
        RawBytes,
        RawBytes,
        metadata=session.headers(),
    ) as outer:
        await outer.send_request()
        _accept_large_frames(_stream_connection(outer))
        serving = asyncio.ensure_future(serve_tunnel(outer, session))
        try:
            yield serving
        except BaseException:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            raise
        if not serving.done():
            with contextlib.suppress(Exception):
                await outer.end()
        try:
            await serving
        except Exception as exc:
            raise SessionError(f"session {session.id}: {_first_line(exc)}") from exc


# -- daemon side: call the client through the tunnel -----------------------------------------


def _reset_status(stream: Any) -> BaseException | None:
    """The status a server sent on ``stream`` when grpclib's client could not report it: a
    grpclib server resets a stream it answers with an error before the client half-closed,
    and sends no content-type with UNIMPLEMENTED."""
    from grpclib.exceptions import GRPCError

    inner = getattr(stream, "_stream", None)
    for headers in (getattr(inner, "trailers", None), getattr(inner, "headers", None)):
        if headers:
            found = dict(headers)
            if "grpc-status" in found:
                try:
                    status, message, details = stream._process_grpc_status(found)
                except GRPCError as exc:
                    return exc
                if status.value == 0:
                    return None
                return GRPCError(status, message, details)
    return None


def _ended_before_reset(stream: Any) -> bool:
    """Whether the server ended ``stream`` (trailers, or a trailers-only answer) before the
    RST_STREAM that made grpclib fail it: its buffered messages are then still readable."""
    inner = stream._stream
    if inner.trailers is not None:
        return True
    return inner.headers is not None and "grpc-status" in dict(inner.headers)


def _call_error(exc: BaseException, method: str, session_id: str, stream: Any = None) -> CallError:
    from grpclib.exceptions import GRPCError, StreamTerminatedError

    if isinstance(exc, CallError):
        return exc
    if stream is not None and (
        isinstance(exc, StreamTerminatedError)
        # grpclib's server answers an unknown method without content-type, which its client
        # reports as UNKNOWN: the real status is in the trailers-only headers
        or (isinstance(exc, GRPCError) and exc.message == "Missing content-type header")
    ):
        exc = _reset_status(stream) or exc
    if isinstance(exc, GRPCError):
        try:
            code = Status(exc.status.value)
        except ValueError:
            code = Status.UNKNOWN
        return CallError(code, exc.message or code.name.lower(), method)
    return CallError(
        Status.UNAVAILABLE, f"session {session_id} connection lost: {_first_line(exc)}", method
    )


# Errors of the inner connection itself (as opposed to a status from the client).
def _transport_errors() -> tuple[type[BaseException], ...]:
    from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
    from h2.exceptions import H2Error

    return (GRPCError, ProtocolError, StreamTerminatedError, H2Error, OSError, ValueError)


class _WireClientStream:
    """A :class:`~bkcore.session.ClientStream` over a grpclib client stream."""

    def __init__(
        self,
        stream: grpclib.client.Stream[Any, Any],
        method: str,
        session_id: str,
        *,
        coalesce: bool = True,
    ) -> None:
        self._stream = stream
        self._method = method
        self._sid = session_id
        self._ended = False
        self._done = False
        self._draining = False
        # the outer Control.Session stream has one sender of large chunks: no outbox
        self._outbox = _Outbox(stream, stream._codec) if coalesce else None
        self._inbox = _Inbox(stream, stream._codec, stream._recv_type) if coalesce else None

    async def send(self, message: Any) -> None:
        if self._done:
            return  # the server has finished: like the in-process transport, drop it
        if self._ended:
            raise CallError(Status.INTERNAL, "send after end of stream", self._method)
        from grpclib.exceptions import StreamTerminatedError
        from h2.exceptions import StreamClosedError

        try:
            if self._outbox is not None:
                await self._outbox.send(message)
            else:
                for part in _split(message):
                    await self._stream.send_message(part)
        except (StreamTerminatedError, StreamClosedError):
            # The server finished and reset its end (grpc-go does after its trailers,
            # grpclib after an error): drop the message as the in-process transport does;
            # its status is read by recv.
            self._ended = True
        except _transport_errors() as exc:
            raise _call_error(exc, self._method, self._sid) from exc

    async def _drain(self) -> Any | None:
        """The next message buffered before the server's reset, then its status."""
        from grpclib.stream import recv_message

        st = self._stream
        if self._inbox is not None:
            msg = await self._inbox.recv()
        else:
            msg = await recv_message(st._stream, st._codec, st._recv_type)
        if msg is not None:
            return msg
        self._done = True
        # grpclib must not wait for metadata again when the call is left
        st._recv_initial_metadata_done = True
        st._recv_trailing_metadata_done = True
        error = _reset_status(st)
        if error is not None:
            raise _call_error(error, self._method, self._sid)
        return None

    async def recv(self) -> Any | None:
        from grpclib.exceptions import StreamTerminatedError

        if self._done:
            return None
        if self._draining:
            return await self._drain()
        try:
            msg = await self._recv()
            if msg is None:
                self._done = True
                if not self._ended and not getattr(self._stream, "_end_done", False):
                    # The server finished first; grpclib reads its status only after our
                    # half-close (nothing we could still send would be read).
                    await self.end()
                await self._stream.recv_trailing_metadata()
        except StreamTerminatedError as exc:
            # Go servers (and grpclib's, after an error) send RST_STREAM right after their
            # trailers; grpclib then fails the stream even though everything arrived.
            if _ended_before_reset(self._stream):
                self._draining = True
                return await self._drain()
            self._done = True
            raise _call_error(exc, self._method, self._sid, self._stream) from exc
        except _transport_errors() as exc:
            self._done = True
            raise _call_error(exc, self._method, self._sid, self._stream) from exc
        return msg

    async def _flush(self) -> None:
        """Write what the outbox holds, then stop its flusher."""
        from grpclib.exceptions import StreamTerminatedError
        from h2.exceptions import StreamClosedError

        if self._outbox is None:
            return
        try:
            await self._outbox.drain()
        except (StreamTerminatedError, StreamClosedError):
            pass  # as in send: the server finished and reset; recv reads its status
        except _transport_errors() as exc:
            raise _call_error(exc, self._method, self._sid, self._stream) from exc
        finally:
            await self._outbox.close()

    async def close(self) -> None:
        """Stop the outbox's flusher without writing what it holds (the call is abandoned)."""
        if self._outbox is not None:
            await self._outbox.close()

    async def send_last(self, message: Any) -> None:
        """Send ``message`` with END_STREAM on its DATA frame (a unary request: one frame
        less than ``send`` + ``end``)."""
        from grpclib.exceptions import StreamTerminatedError
        from h2.exceptions import StreamClosedError

        if self._ended or len(_split(message)) != 1:
            await self.send(message)
            await self.end()
            return
        await self._flush()
        self._ended = True
        try:
            await self._stream.send_message(message, end=True)
        except (StreamTerminatedError, StreamClosedError) as exc:
            if not _ended_before_reset(self._stream):
                raise _call_error(exc, self._method, self._sid, self._stream) from exc
        except _transport_errors() as exc:
            raise _call_error(exc, self._method, self._sid, self._stream) from exc

    async def _recv(self) -> Any | None:
        if self._inbox is None:
            return await self._stream.recv_message()
        st = self._stream
        if not st._recv_initial_metadata_done:
            await st.recv_initial_metadata()  # raises the status of a trailers-only answer
        with st._wrapper:  # a reset of the stream or the connection interrupts the wait
            return await self._inbox.recv()

    async def end(self) -> None:
        from grpclib.exceptions import StreamTerminatedError
        from h2.exceptions import StreamClosedError

        if not self._ended:
            self._ended = True
            await self._flush()
            try:
                await self._stream.end()
            except (StreamTerminatedError, StreamClosedError) as exc:
                if not _ended_before_reset(self._stream):
                    raise _call_error(exc, self._method, self._sid, self._stream) from exc
                # the server already answered and reset the stream: recv reads its status
            except _transport_errors() as exc:
                raise _call_error(exc, self._method, self._sid, self._stream) from exc


def _tunnel_channel(tunnel: _Tunnel, session_id: str) -> grpclib.client.Channel:
    """A grpclib channel whose only connection is the tunnel (it never reconnects)."""
    from grpclib.client import Channel

    class TunnelChannel(Channel):
        async def _create_connection(self) -> H2Protocol:
            raise ConnectionError(f"session {session_id}: the tunnel is closed")

    channel = TunnelChannel(host="localhost", port=80, codec=_make_codec())
    protocol = channel._protocol_factory()
    tunnel.attach(protocol)
    channel._protocol = protocol
    return channel


class TunnelCaller:
    """A :class:`~bkcore.session.Caller` making gRPC calls through a session's tunnel."""

    def __init__(self, tunnel: _Tunnel, methods: list[str], session_id: str) -> None:
        self._methods = {m.lower() for m in methods}
        self._sid = session_id
        self._channel = _tunnel_channel(tunnel, session_id)

    def supports(self, method: str) -> bool:
        return method.lower() in self._methods

    def close(self) -> None:
        self._channel.close()

    async def call_unary(
        self, method: str, request: Any, response_type: type[M], metadata: MetadataLike = ()
    ) -> M:
        reply: Any = None
        # Opened as a stream: the wire is the same, and one code path reads the status.
        async with self._stream(method, response_type, _to_grpclib(metadata)) as st:
            assert isinstance(st, _WireClientStream)
            await st.send_last(request)
            reply = await st.recv()
        if not isinstance(reply, response_type):
            raise CallError(Status.INTERNAL, "the client sent no response", method)
        return reply

    def open_stream(
        self, method: str, response_type: type[Any], metadata: MetadataLike = ()
    ) -> AbstractAsyncContextManager[ClientStream]:
        return self._stream(method, response_type, _to_grpclib(metadata))

    @asynccontextmanager
    async def _stream(
        self,
        method: str,
        response_type: type[Any],
        metadata: list[tuple[str, str]],
    ) -> AsyncIterator[ClientStream]:
        from grpclib.const import Cardinality

        try:
            cm = self._channel.request(
                method, Cardinality.STREAM_STREAM, object, response_type, metadata=metadata
            )
            stream = await cm.__aenter__()
            await stream.send_request()
        except _transport_errors() as exc:
            raise _call_error(exc, method, self._sid) from exc
        client = _WireClientStream(stream, method, self._sid)
        try:
            yield client
            await client.end()
            while await client.recv() is not None:
                pass
        except BaseException as exc:
            await client.close()
            with contextlib.suppress(Exception):
                await stream.cancel()
            with contextlib.suppress(Exception):
                await cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        try:
            await cm.__aexit__(None, None, None)
        except _transport_errors() as exc:
            raise _call_error(exc, method, self._sid) from exc


async def health_loop(
    caller: Any, interval: float = HEALTH_INTERVAL, timeout: float = HEALTH_TIMEOUT
) -> None:
    """Poll ``Health/Check`` every ``interval`` seconds; return when the session is to be
    torn down: two failures without a run of five successes between them (session.md §4).
    The timeout of a check is max(``timeout``, 1.5 x the last check's duration)."""
    loop = asyncio.get_running_loop()
    last = 0.0
    failed_before = False
    successes = 0
    while True:
        await asyncio.sleep(interval)
        start = loop.time()
        try:
            await asyncio.wait_for(
                caller.call_unary(HEALTH_CHECK, HealthCheckRequest(), HealthCheckResponse),
                max(timeout, 1.5 * last),
            )
        except (CallError, TimeoutError):
            successes = 0
            if failed_before:
                return
            failed_before = True
            continue
        last = loop.time() - start
        successes += 1
        if successes >= 5:
            failed_before = False


async def handle_session(
    stream: grpclib.server.Stream[Any, Any],
    manager: SessionManager,
    *,
    health_interval: float = HEALTH_INTERVAL,
) -> None:
    """The daemon's ``Control.Session`` servicer (messages are ``BytesMessage``).

    Registers the session under its ``x-docker-expose-session-uuid`` with a
    :class:`TunnelCaller` while the stream lasts. It ends (and the session is unregistered,
    so :attr:`ConnectedSession.closed` is set for builds using it) when the client
    half-closes or disappears, when health checks fail, or when the manager closes it.
    """
    from grpclib.const import Status as GStatus
    from grpclib.exceptions import GRPCError

    _accept_large_frames(_stream_connection(stream))
    md = _from_grpclib(stream.metadata)
    session_id = md.get(HEADER_UUID)
    if not session_id or ":" in session_id:
        raise GRPCError(
            GStatus.INVALID_ARGUMENT, f"Control.Session: invalid or missing {HEADER_UUID} header"
        )
    tunnel = _Tunnel()
    caller = TunnelCaller(tunnel, md.get_all(HEADER_METHOD), session_id)
    stop = asyncio.Event()
    finished = asyncio.Event()

    async def on_close() -> None:
        stop.set()
        await finished.wait()

    try:
        manager.register(
            session_id, md.get(HEADER_NAME), md.get(HEADER_SHARED_KEY), caller, on_close=on_close
        )
    except SessionError as exc:
        caller.close()
        tunnel.lost()
        raise GRPCError(GStatus.ALREADY_EXISTS, str(exc)) from None

    async def send(chunk: bytes) -> None:
        await stream.send_message(RawBytes(chunk))

    async def recv() -> bytes | None:
        msg = await stream.recv_message()
        return None if msg is None else bytes(msg.data)

    try:
        await _first_done(
            _pump_in(tunnel, recv),
            _pump_out(tunnel, send),
            health_loop(caller, health_interval),
            stop.wait(),
        )
    except Exception:  # the client went away: the session just ends
        pass
    finally:
        manager.unregister(session_id)
        caller.close()
        tunnel.lost()
        finished.set()


def session_handlers(
    manager: SessionManager, *, health_interval: float = HEALTH_INTERVAL
) -> dict[str, grpclib.const.Handler]:
    """The grpclib mapping entry of ``Control.Session`` for the daemon's server."""
    from grpclib.const import Cardinality
    from grpclib.const import Handler as GHandler

    async def serve(stream: grpclib.server.Stream[Any, Any]) -> None:
        await handle_session(stream, manager, health_interval=health_interval)

    # BytesMessage{bytes data = 1}, hand-written: same bytes, no betterproto decoding
    return {CONTROL_SESSION: GHandler(serve, Cardinality.STREAM_STREAM, RawBytes, RawBytes)}


class SessionService:
    """A grpclib service object serving only ``Control.Session`` (``__mapping__``): for a
    daemon server's handler list, or a test server."""

    def __init__(self, manager: SessionManager, *, health_interval: float = HEALTH_INTERVAL):
        self._mapping = session_handlers(manager, health_interval=health_interval)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return dict(self._mapping)
