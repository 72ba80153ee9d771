"""The in-process transport: the daemon calls a :class:`Session`'s handlers directly.

Unary calls await the handler in the caller's task. A stream runs the handler as a task in a
``TaskGroup`` owned by the ``open_stream`` context and connects both ends with bounded
queues (back-pressure as on HTTP/2 flow control). Handler failures reach the caller as
:class:`CallError`, exactly as a gRPC transport would report them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

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

__all__ = ["InProcessCaller"]

M = TypeVar("M")
_EOF = object()
_QUEUE_SIZE = 256


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: CallError) -> None:
        self.error = error


class _Channel:
    """A bounded one-way message queue with one reader; writers never block once the reader
    has left. Leaner than ``asyncio.Queue`` (this is the hot path of every stream)."""

    __slots__ = ("_getter", "_gone", "_items", "_putters")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._gone = False

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def put(self, item: Any) -> None:
        while len(self._items) >= _QUEUE_SIZE and not self._gone:
            fut = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            await fut
        if self._gone:
            return
        self._items.append(item)
        self._wake_getter()

    def put_final(self, item: Any) -> None:
        """Queue an end marker without waiting (may exceed the bound by one)."""
        if not self._gone:
            self._items.append(item)
            self._wake_getter()

    async def get(self) -> Any:
        while not self._items:
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        item = self._items.popleft()
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)
                break
        return item

    def reader_gone(self) -> None:
        self._gone = True
        self._items.clear()
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)


class _ServerEnd:
    def __init__(self, metadata: Metadata, inbox: _Channel, outbox: _Channel) -> None:
        self._metadata = metadata
        self._inbox = inbox
        self._outbox = outbox
        self._eof = False

    @property
    def metadata(self) -> Metadata:
        return self._metadata

    async def recv(self) -> Any | None:
        if self._eof:
            return None
        item = await self._inbox.get()
        if item is _EOF:
            self._eof = True
            return None
        return item

    async def send(self, message: Any) -> None:
        await self._outbox.put(message)


class _ClientEnd:
    def __init__(self, method: str, inbox: _Channel, outbox: _Channel) -> None:
        self._method = method
        self._inbox = inbox
        self._outbox = outbox
        self._ended = False
        self._done = False

    async def send(self, message: Any) -> None:
        if self._ended:
            raise CallError(Status.INTERNAL, "send after end of stream", self._method)
        await self._outbox.put(message)

    async def recv(self) -> Any | None:
        if self._done:
            return None
        item = await self._inbox.get()
        if item is _EOF:
            self._done = True
            return None
        if isinstance(item, _Failed):
            self._done = True
            raise item.error
        return item

    async def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._outbox.put_final(_EOF)


def _as_call_error(exc: Exception, method: str) -> CallError:
    if isinstance(exc, CallError):
        return CallError(exc.code, exc.message, method)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return CallError(Status.UNKNOWN, text, method)


class InProcessCaller:
    """A :class:`~bkcore.session.transport.Caller` over handlers in this process."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = dict(handlers)
        self._lower = {name.lower(): h for name, h in self._handlers.items()}

    def supports(self, method: str) -> bool:
        return method.lower() in self._lower

    def _lookup(self, method: str) -> Handler:
        handler = self._handlers.get(method) or self._lower.get(method.lower())
        if handler is None:
            raise CallError(Status.UNIMPLEMENTED, "method not implemented by the client", method)
        return handler

    async def call_unary(
        self, method: str, request: Any, response_type: type[M], metadata: MetadataLike = ()
    ) -> M:
        handler = self._lookup(method)
        if handler.kind != "unary":
            raise CallError(Status.INTERNAL, "method is a stream, not unary", method)
        func: UnaryFunc = handler.func  # type: ignore[assignment]
        try:
            response = await func(request, as_metadata(metadata))
        except Exception as exc:
            raise _as_call_error(exc, method) from exc
        if not isinstance(response, response_type):
            raise CallError(Status.INTERNAL, f"handler returned {type(response).__name__}", method)
        return response

    def open_stream(
        self, method: str, response_type: type[Any], metadata: MetadataLike = ()
    ) -> AbstractAsyncContextManager[ClientStream]:
        return self._stream(method, as_metadata(metadata))

    @asynccontextmanager
    async def _stream(self, method: str, metadata: Metadata) -> AsyncIterator[ClientStream]:
        handler = self._lookup(method)
        if handler.kind != "stream":
            raise CallError(Status.INTERNAL, "method is unary, not a stream", method)
        func: StreamFunc = handler.func  # type: ignore[assignment]
        to_server, to_client = _Channel(), _Channel()
        server = _ServerEnd(metadata, to_server, to_client)
        client = _ClientEnd(method, to_client, to_server)

        async def serve() -> None:
            try:
                await func(server)
            except Exception as exc:
                failure = _as_call_error(exc, method)
                failure.__cause__ = exc  # keep the handler's traceback for debugging
                to_client.put_final(_Failed(failure))
            else:
                to_client.put_final(_EOF)
            finally:
                to_server.reader_gone()

        error: BaseException | None = None
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(serve())
            try:
                yield client
                await client.end()
                while await client.recv() is not None:
                    pass
            except BaseException as exc:  # re-raised below, outside the TaskGroup
                error = exc
                task.cancel()
            finally:
                to_client.reader_gone()
        if error is not None:
            raise error
