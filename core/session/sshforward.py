"""The SSH forwarding protocol (session.md §6): its messages and the daemon side.

:func:`forward_agent` exposes a client's SSH agent as a local unix socket, one
``ForwardAgent`` stream per connection. The client side (the attachable proxying its agent
sockets) is ``bkcore.sessions.sshforward.agent.SSHProvider``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import betterproto

from bkcore.errors import SessionError
from bkcore.session.tasks import run_with
from bkcore.session.transport import Caller, CallError

__all__ = [
    "CHECK_AGENT",
    "DEFAULT_ID",
    "FORWARD_AGENT",
    "ID_HEADER",
    "READ_SIZE",
    "BytesMessage",
    "CheckAgentRequest",
    "CheckAgentResponse",
    "forward_agent",
]

CHECK_AGENT = "/moby.sshforward.v1.SSH/CheckAgent"
FORWARD_AGENT = "/moby.sshforward.v1.SSH/ForwardAgent"
#: Request header naming the agent a ``ForwardAgent`` stream is for.
ID_HEADER = "buildkit.ssh.id"
DEFAULT_ID = "default"
#: Bytes read from a socket at a time, on either side.
READ_SIZE = 64 * 1024


@dataclass(eq=False, repr=False)
class CheckAgentRequest(betterproto.Message):
    id: str = betterproto.string_field(1)


@dataclass(eq=False, repr=False)
class CheckAgentResponse(betterproto.Message):
    pass


@dataclass(eq=False, repr=False)
class BytesMessage(betterproto.Message):
    data: bytes = betterproto.bytes_field(1)


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
                    while data := await reader.read(READ_SIZE):
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
