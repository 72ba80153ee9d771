"""Sessions: client-side attachables reached by the daemon through a transport.

Public API: :class:`Session` (client side), :class:`SessionManager` and
:class:`ConnectedSession` (daemon side), and the transport interface (:class:`Caller`,
:class:`Handler`, :class:`Metadata`, :class:`CallError`, :class:`Status`).
"""

from bkcore.session.inprocess import InProcessCaller
from bkcore.session.manager import ConnectedSession, SessionManager
from bkcore.session.session import Session, new_session_id
from bkcore.session.transport import (
    Attachable,
    Caller,
    CallError,
    ClientStream,
    Handler,
    Metadata,
    MetadataLike,
    ServerStream,
    Status,
    as_metadata,
)

__all__ = [
    "Attachable",
    "CallError",
    "Caller",
    "ClientStream",
    "ConnectedSession",
    "Handler",
    "InProcessCaller",
    "Metadata",
    "MetadataLike",
    "ServerStream",
    "Session",
    "SessionManager",
    "Status",
    "as_metadata",
    "new_session_id",
]
