"""The daemon's registry of connected sessions.

A transport registers each session when it connects (in-process: :meth:`attach`; gRPC: the
``Control.Session`` handler) and unregisters it when it ends. Builds find sessions by id,
waiting a while for one that has not connected yet (the client may open ``Session`` after
``Solve``), or by *group*: the ids attached to a build, tried in order (session.md §3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from bkcore.errors import SessionError
from bkcore.session.session import Session
from bkcore.session.transport import Caller, CallError

__all__ = ["ConnectedSession", "SessionManager"]

T = TypeVar("T")

DEFAULT_WAIT = 5.0


@dataclass(eq=False)
class ConnectedSession:
    """A session as the daemon sees it: identity plus a :class:`Caller`."""

    id: str
    name: str
    shared_key: str
    caller: Caller
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    on_close: Callable[[], Awaitable[None]] | None = None


def _clean_id(session_id: str) -> str:
    """``prefix:uuid`` is looked up as ``uuid`` (session.md §3)."""
    return session_id.rsplit(":", 1)[-1]


class SessionManager:
    """Connected sessions by id, with waiting lookup and group iteration."""

    def __init__(self) -> None:
        self._sessions: dict[str, ConnectedSession] = {}
        self._changed = asyncio.Event()
        self._closed = False

    def register(
        self,
        session_id: str,
        name: str,
        shared_key: str,
        caller: Caller,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> ConnectedSession:
        """Add a connected session; a second session with a live id is refused.

        ``on_close`` is how :meth:`close` ends the session's transport (a gRPC transport
        ends the ``Control.Session`` stream there); the in-process transport needs none.
        """
        if self._closed:
            raise SessionError("session manager is closed")
        if session_id in self._sessions:
            raise SessionError(f"session {session_id} is already connected")
        conn = ConnectedSession(session_id, name, shared_key, caller, on_close=on_close)
        self._sessions[session_id] = conn
        self._notify()
        return conn

    def attach(self, session: Session) -> ConnectedSession:
        """Register a client :class:`Session` through the in-process transport."""
        return self.register(session.id, session.name, session.shared_key, session.caller())

    def unregister(self, session_id: str) -> None:
        """Forget a session (its transport ended); waiting callers no longer find it."""
        conn = self._sessions.pop(session_id, None)
        if conn is not None:
            conn.closed.set()
            self._notify()

    def _notify(self) -> None:
        # Wake every waiter of the current generation and start a new one.
        self._changed.set()
        self._changed = asyncio.Event()

    def ids(self) -> list[str]:
        return list(self._sessions)

    async def get(self, session_id: str, timeout: float = DEFAULT_WAIT) -> ConnectedSession:
        """The session ``session_id``, waiting up to ``timeout`` seconds for it to connect."""
        sid = _clean_id(session_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._closed:
                raise SessionError("session manager is closed")
            conn = self._sessions.get(sid)
            if conn is not None:
                return conn
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SessionError(f"no active session for {sid}: timed out after {timeout}s")
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                continue

    async def any(
        self,
        group: Iterable[str],
        fn: Callable[[ConnectedSession], Awaitable[T]],
        timeout: float = DEFAULT_WAIT,
    ) -> T:
        """Run ``fn`` on the first session of ``group`` for which it succeeds.

        Sessions that are not connected within ``timeout`` are skipped; a
        :class:`SessionError` from ``fn`` moves on to the next session, and the last such
        error is raised when none succeeds.
        """
        last: SessionError | None = None
        for sid in group:
            try:
                conn = await self.get(sid, timeout)
            except SessionError as exc:
                last = exc
                continue
            try:
                return await fn(conn)
            except (CallError, SessionError) as exc:
                last = exc
        if last is None:
            raise SessionError("no session in the build's group")
        raise last

    async def close(self) -> None:
        """Unregister every session, end their transports and wake waiters; later lookups
        fail. Every transport is closed even if one of them fails (the first error is
        raised afterwards)."""
        self._closed = True
        conns = list(self._sessions.values())
        for conn in conns:
            self.unregister(conn.id)
        self._notify()
        first: BaseException | None = None
        for conn in conns:
            if conn.on_close is not None:
                try:
                    await conn.on_close()
                except Exception as exc:
                    first = first or exc
        if first is not None:
            raise SessionError(f"closing a session failed: {first}") from first
