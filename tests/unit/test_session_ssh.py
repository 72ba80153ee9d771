"""SSH agent forwarding through the session to a fake agent socket."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bkcore.errors import SessionError
from bkcore.session import Session
from bkcore.session.sshforward import CHECK_AGENT, FORWARD_AGENT, forward_agent
from bkcore.sessions.sshforward import SSHProvider, parse_ssh_spec


async def fake_agent(path: str) -> asyncio.Server:
    """Answers each chunk with ``agent:`` + chunk; closes on EOF."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(b"agent:" + data)
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path)


def test_proxy_echoes_through_fake_agent(tmp_path: Path) -> None:
    agent_path = str(tmp_path / "agent.sock")

    async def main() -> tuple[list[bytes], str]:
        server = await fake_agent(agent_path)
        session = Session()
        session.allow(SSHProvider({"default": agent_path}))
        replies = []
        async with forward_agent(session.caller(), "") as path:
            assert os.stat(path).st_mode & 0o777 == 0o600
            for msg in (b"hello", b"world"):
                # one connection per request, as ssh clients do, plus a concurrent one
                r, w = await asyncio.open_unix_connection(path)
                r2, w2 = await asyncio.open_unix_connection(path)
                w.write(msg)
                w2.write(msg[::-1])
                await w.drain()
                await w2.drain()
                replies.append(await r.readexactly(6 + len(msg)))
                replies.append(await r2.readexactly(6 + len(msg)))
                w.write_eof()
                assert await r.read() == b""  # the agent's EOF travels back
                w.close()
                w2.close()
        server.close()
        return replies, path

    replies, path = asyncio.run(main())
    assert replies == [b"agent:hello", b"agent:olleh", b"agent:world", b"agent:dlrow"]
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))


def test_unknown_agent_id_is_refused(tmp_path: Path) -> None:
    session = Session()
    session.allow(SSHProvider({"default": str(tmp_path / "a.sock")}))
    assert {CHECK_AGENT, FORWARD_AGENT} <= set(session.methods())

    async def main() -> None:
        async with forward_agent(session.caller(), "other"):
            raise AssertionError("must not get here")

    with pytest.raises(SessionError, match="not forwarded"):
        asyncio.run(main())


def test_parse_ssh_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/agent.sock")
    assert parse_ssh_spec("default") == ("default", "/run/agent.sock")
    assert parse_ssh_spec("gh=/tmp/gh.sock") == ("gh", "/tmp/gh.sock")
    monkeypatch.delenv("SSH_AUTH_SOCK")
    with pytest.raises(SessionError):
        parse_ssh_spec("default")
    with pytest.raises(SessionError):
        parse_ssh_spec("=/x")
