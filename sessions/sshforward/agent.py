"""SSH agent forwarding, client side: proxy the client's agent sockets (session.md §6).

The messages and the daemon side (:func:`bkcore.session.sshforward.forward_agent`) live in
:mod:`bkcore.session.sshforward`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping

from bkcore.errors import SessionError
from bkcore.session.sshforward import (
    CHECK_AGENT,
    DEFAULT_ID,
    FORWARD_AGENT,
    ID_HEADER,
    READ_SIZE,
    BytesMessage,
    CheckAgentRequest,
    CheckAgentResponse,
)
from bkcore.session.tasks import run_with
from bkcore.session.transport import CallError, Handler, Metadata, ServerStream, Status

__all__ = ["SSHProvider", "parse_ssh_spec"]


def parse_ssh_spec(spec: str) -> tuple[str, str]:
    """``default`` (``$SSH_AUTH_SOCK``), ``ID`` (also ``$SSH_AUTH_SOCK``) or ``ID=SOCKET``."""
    sid, sep, path = spec.partition("=")
    sid = sid.strip()
    if not sid:
        raise SessionError(f"invalid ssh spec {spec!r}: id is required")
    if sep:
        if not path or "," in path:
            raise SessionError(f"invalid ssh spec {spec!r}: expected ID=SOCKET")
        return sid, os.path.abspath(path)
    sock = os.environ.get("SSH_AUTH_SOCK", "")
    if not sock:
        raise SessionError(f"invalid ssh spec {spec!r}: SSH_AUTH_SOCK is not set")
    return sid, sock


class SSHProvider:
    """Client-side attachable forwarding agent sockets by id."""

    def __init__(self, agents: Mapping[str, str]) -> None:
        self._agents = dict(agents)

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> SSHProvider:
        """A provider for ``--ssh`` values; a repeated id is a :class:`SessionError`."""
        agents: dict[str, str] = {}
        for spec in specs:
            sid, path = parse_ssh_spec(spec)
            if sid in agents:
                raise SessionError(f"ssh id {sid!r} is given twice")
            agents[sid] = path
        return cls(agents)

    def handlers(self) -> Mapping[str, Handler]:
        return {
            CHECK_AGENT: Handler("unary", self._check, CheckAgentRequest, CheckAgentResponse),
            FORWARD_AGENT: Handler("stream", self._forward, BytesMessage, BytesMessage),
        }

    def _socket(self, sid: str) -> str:
        path = self._agents.get(sid or DEFAULT_ID)
        if path is None:
            raise CallError(Status.UNKNOWN, f"unset ssh forward key {sid or DEFAULT_ID}")
        return path

    async def _check(self, request: CheckAgentRequest, metadata: Metadata) -> CheckAgentResponse:
        self._socket(request.id)
        return CheckAgentResponse()

    async def _forward(self, stream: ServerStream) -> None:
        path = self._socket(stream.metadata.get(ID_HEADER))
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except OSError as exc:
            raise CallError(Status.UNAVAILABLE, f"ssh agent unreachable: {exc.strerror}") from None

        async def to_agent() -> None:
            while (msg := await stream.recv()) is not None:
                writer.write(msg.data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        async def from_agent() -> None:
            while data := await reader.read(READ_SIZE):
                await stream.send(BytesMessage(data=data))

        try:
            # the client side ends when the agent connection reaches EOF
            await run_with(from_agent(), to_agent())
        finally:
            writer.close()
