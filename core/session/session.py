"""A client session: an id, a name, a shared key and the attachables it serves."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from bkcore.errors import SessionError
from bkcore.session.health import HealthService
from bkcore.session.inprocess import InProcessCaller
from bkcore.session.transport import Attachable, Handler

__all__ = ["Session", "new_session_id"]

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"

HEADER_UUID = "x-docker-expose-session-uuid"
HEADER_NAME = "x-docker-expose-session-name"
HEADER_SHARED_KEY = "x-docker-expose-session-sharedkey"
HEADER_METHOD = "x-docker-expose-session-grpc-method"


def new_session_id() -> str:
    """A 25-character lowercase base36 random id, like the Go client's."""
    return "".join(secrets.choice(_BASE36) for _ in range(25))


class Session:
    """The client side of a session: attachables keyed by full gRPC method name.

    Every session serves ``grpc.health.v1.Health/Check`` (session.md §4) from the start.
    """

    def __init__(self, id: str | None = None, name: str = "", shared_key: str = "") -> None:
        sid = id if id is not None else new_session_id()
        if not sid or ":" in sid:
            raise SessionError(f"invalid session id {sid!r}: must be non-empty without ':'")
        self.id = sid
        self.name = name
        self.shared_key = shared_key
        self._handlers: dict[str, Handler] = {}
        self.allow(HealthService())

    def allow(self, attachable: Attachable) -> None:
        """Serve every method of ``attachable``; a method served twice is an error."""
        new = dict(attachable.handlers())
        taken = {m.lower() for m in self._handlers}
        for method in new:
            if method.lower() in taken:
                raise SessionError(f"session {self.id}: method {method} is already served")
        self._handlers.update(new)

    def handlers(self) -> Mapping[str, Handler]:
        return dict(self._handlers)

    def methods(self) -> list[str]:
        """The advertised method list (``x-docker-expose-session-grpc-method`` values)."""
        return sorted(self._handlers)

    def headers(self) -> list[tuple[str, str]]:
        """Metadata a wire client sends when opening ``Control.Session`` (session.md §2).

        An empty shared key or name is omitted (grpclib cannot send empty values; the daemon
        reads a missing header as empty).
        """
        out = [(HEADER_UUID, self.id)]
        if self.name:
            out.append((HEADER_NAME, self.name))
        if self.shared_key:
            out.append((HEADER_SHARED_KEY, self.shared_key))
        out.extend((HEADER_METHOD, m) for m in self.methods())
        return out

    def caller(self) -> InProcessCaller:
        """An in-process :class:`~bkcore.session.transport.Caller` for this session."""
        return InProcessCaller(self._handlers)
