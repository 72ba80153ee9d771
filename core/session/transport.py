"""The transport interface between the daemon and a client session.

The shape follows the wire protocol of ``spec/session.md``: the client *serves* attachables,
each a set of gRPC methods named ``/<package.Service>/<Method>``; the daemon *calls* them,
either unary or as a bidi stream, with request metadata. The in-process transport
(:mod:`bkcore.session.inprocess`) passes message objects through queues; a gRPC transport
encodes the same objects (``bytes(msg)`` / ``type(msg).FromString(data)``, which betterproto
messages and the hand-written filesync packets both provide) on the tunnelled connection.

Errors cross the boundary as :class:`CallError` carrying a gRPC status code, so code written
against one transport handles ``NOT_FOUND`` or ``UNIMPLEMENTED`` the same way on the other.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from bkcore.errors import SessionError

__all__ = [
    "CallError",
    "Caller",
    "ClientStream",
    "Handler",
    "Metadata",
    "MetadataLike",
    "ServerStream",
    "Status",
]

M = TypeVar("M")


class Status(enum.IntEnum):
    """gRPC status codes (the subset meaning is the same as grpc's)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class CallError(SessionError):
    """A session call failed with a gRPC status (raised on the daemon side of a call).

    Attachable handlers raise it to answer with a specific status; any other exception from a
    handler reaches the caller as ``Status.UNKNOWN`` with the exception's one-line message.
    """

    def __init__(self, code: Status, message: str, method: str = "") -> None:
        self.code = code
        self.message = message
        self.method = method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code.name.lower()}: {message}")


class Metadata:
    """Request metadata: ordered, multi-valued, keys compared lower-case (as on HTTP/2)."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs: tuple[tuple[str, str], ...] = tuple((k.lower(), v) for k, v in pairs)

    def get(self, key: str, default: str = "") -> str:
        """The first value of ``key``, or ``default``."""
        key = key.lower()
        for k, v in self._pairs:
            if k == key:
                return v
        return default

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key`` in order."""
        key = key.lower()
        return [v for k, v in self._pairs if k == key]

    def pairs(self) -> tuple[tuple[str, str], ...]:
        return self._pairs

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"Metadata({list(self._pairs)!r})"


MetadataLike = Metadata | Iterable[tuple[str, str]] | Mapping[str, str]


def as_metadata(md: MetadataLike) -> Metadata:
    """Normalise pairs, a mapping or a :class:`Metadata` into :class:`Metadata`."""
    if isinstance(md, Metadata):
        return md
    if isinstance(md, Mapping):
        return Metadata(md.items())
    return Metadata(md)


class ServerStream(Protocol):
    """What a stream handler (client side, serving an attachable) talks to."""

    @property
    def metadata(self) -> Metadata: ...

    async def recv(self) -> Any | None:
        """The next request message, or ``None`` once the caller half-closed."""
        ...

    async def send(self, message: Any) -> None: ...


class ClientStream(Protocol):
    """What the daemon side of a bidi call talks to."""

    async def send(self, message: Any) -> None: ...

    async def recv(self) -> Any | None:
        """The next response, ``None`` at a clean end; raises :class:`CallError` on failure."""
        ...

    async def end(self) -> None:
        """Half-close: no more requests will be sent."""
        ...


UnaryFunc = Callable[[Any, Metadata], Awaitable[Any]]
StreamFunc = Callable[[ServerStream], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Handler:
    """One served method: how to run it and which message types it speaks.

    ``func`` is ``async (request, metadata) -> response`` for ``kind="unary"`` and
    ``async (stream) -> None`` for ``kind="stream"``. The types let a wire transport decode
    requests (``request_type.FromString``) without knowing the attachable.
    """

    kind: Literal["unary", "stream"]
    func: UnaryFunc | StreamFunc
    request_type: type[Any]
    response_type: type[Any]


class Attachable(Protocol):
    """A client-side service: maps full method names to handlers."""

    def handlers(self) -> Mapping[str, Handler]: ...


class Caller(Protocol):
    """How the daemon calls into one client session, whatever the transport."""

    def supports(self, method: str) -> bool:
        """Whether the session advertised ``method`` (compared case-insensitively)."""
        ...

    async def call_unary(
        self, method: str, request: Any, response_type: type[M], metadata: MetadataLike = ()
    ) -> M:
        """Call a unary method; raises :class:`CallError` with the handler's status."""
        ...

    def open_stream(
        self, method: str, response_type: type[Any], metadata: MetadataLike = ()
    ) -> AbstractAsyncContextManager[ClientStream]:
        """Open a bidi stream; leaving the context waits for the server side to finish."""
        ...
