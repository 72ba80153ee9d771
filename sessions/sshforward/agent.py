"""SSH agent forwarding: the client proxies its agent socket; the daemon exposes it as a
local unix socket (session.md §6). One ``ForwardAgent`` stream per connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

import betterproto
from bkcore.errors import SessionError
from bkcore.session.tasks import run_with
from bkcore.session.transport import Caller, CallError, Handler, Metadata, ServerStream, Status

__all__ = [
    "CHECK_AGENT",
    "FORWARD_AGENT",
    "SSHProvider",
    "forward_agent",
    "parse_ssh_spec",
]

CHECK_AGENT = "/moby.sshforward.v1.SSH/CheckAgent"
FORWARD_AGENT = "/moby.sshforward.v1.SSH/ForwardAgent"
ID_HEADER = "buildkit.ssh.id"
DEFAULT_ID = "default"
_READ = 64 * 1024


@dataclass(eq=False, repr=False)
class CheckAgentRequest(betterproto.Message):
    id: str = betterproto.string_field(1)


@dataclass(eq=False, repr=False)
class CheckAgentResponse(betterproto.Message):
    pass


@dataclass(eq=False, repr=False)
class BytesMessage(betterproto.Message):
    data: bytes = betterproto.bytes_field(1)


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
            while data := await reader.read(_READ):
                await stream.send(BytesMessage(data=data))

        try:
            # the client side ends when the agent connection reaches EOF
            await run_with(from_agent(), to_agent())
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def forward_agent(caller: Caller, agent_id: str = DEFAULT_ID) -> AsyncIterator[str]:
    """Serve the client's agent ``agent_id`` on a fresh local unix socket; yield its path.

    Each connection to the socket is proxied over its own ``ForwardAgent`` stream. Leaving
    the context closes the listener and every open connection and removes the socket.
    """
    sid = agent_id or DEFAULT_ID
    try:
        await caller.call_unary(CHECK_AGENT, CheckAgentRequest(id=sid), CheckAgentResponse)
    except CallError as exc:
        raise SessionError(f"ssh agent {sid!r} is not forwarded by the client") from exc
    tmpdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="bkcore-ssh-")
    path = os.path.join(tmpdir, "agent.sock")
    pumps: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with caller.open_stream(FORWARD_AGENT, BytesMessage, [(ID_HEADER, sid)]) as st:

                async def up() -> None:
                    while data := await reader.read(_READ):
                        await st.send(BytesMessage(data=data))
                    await st.end()

                async def down() -> None:
                    while (msg := await st.recv()) is not None:
                        writer.write(msg.data)
                        await writer.drain()

                await run_with(down(), up())
        except (SessionError, OSError):
            pass  # one broken agent connection ends that connection only
        finally:
            writer.close()

    error: BaseException | None = None
    async with asyncio.TaskGroup() as tg:

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = tg.create_task(pump(reader, writer))
            pumps.add(task)
            task.add_done_callback(pumps.discard)

        server = await asyncio.start_unix_server(on_connect, path)
        try:
            os.chmod(path, 0o600)
            yield path
        except BaseException as exc:  # re-raised below, outside the TaskGroup
            error = exc
        finally:
            server.close()
            for task in list(pumps):
                task.cancel()
    await asyncio.to_thread(shutil.rmtree, tmpdir, True)
    if error is not None:
        raise error
