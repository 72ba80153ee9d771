"""The session tunnel between two processes: a separate client process serves a directory,
a real OpenSSH agent and a secret over Control.Session on a unix socket; this (daemon)
process syncs the directory (rsync finds it identical), lists the agent's keys with
ssh-add through the forwarded socket, reads the secret, and sees the session released when
the client process is killed."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bkcore.session import SessionManager
from bkcore.session.filesync import sync_dir
from bkcore.session.secrets import get_secret
from bkcore.session.sshforward import forward_agent

pytestmark = pytest.mark.integration

CLIENT = """
import asyncio, sys
from grpclib.client import Channel
from bkcore.api.codec import GoCodec
from bkcore.session import Session
from bkcore.session.grpc_transport import attach_session
from bkcore.sessions.filesync import FileSyncProvider
from bkcore.sessions.secrets import SecretsProvider
from bkcore.sessions.sshforward import SSHProvider

sock, sid, src, agent = sys.argv[1:5]

async def main():
    s = Session(id=sid, name="proc")
    s.allow(FileSyncProvider({"ctx": src}))
    s.allow(SSHProvider({"default": agent}))
    s.allow(SecretsProvider({"tok": b"from-another-process"}))
    ch = Channel(path=sock, codec=GoCodec())
    async with attach_session(ch, s) as serving:
        print("attached", flush=True)
        await serving
    ch.close()

asyncio.run(main())
"""


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not installed)")


def test_session_served_by_another_process(tmp_path: Path) -> None:
    need("ssh-agent", "ssh-add", "ssh-keygen", "rsync")
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a" / "b").mkdir(parents=True)
    for i in range(40):
        (src / "a" / f"f{i}").write_bytes(os.urandom(i * 4099))
    (src / "big").write_bytes(os.urandom(12 << 20))
    os.symlink("a/f3", src / "l")
    os.link(src / "a" / "f5", src / "h")
    os.setxattr(src / "a" / "f1", "user.k", b"v")
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bk-proc-key", "-f", str(key)],
        check=True,
    )
    agent_sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_sock)], stdout=subprocess.DEVNULL)
    sockdir = Path(os.path.realpath("/tmp")) / f"d6p{os.getpid()}"
    sockdir.mkdir()
    sock = str(sockdir / "bk.sock")
    sid = "procsession0000000000000a"
    try:
        for _ in range(200):
            if agent_sock.exists():
                break
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(agent_sock)}
        subprocess.run(["ssh-add", "-q", str(key)], check=True, env=env)

        async def main() -> tuple[str, bytes, bool]:
            from grpclib.server import Server

            from bkcore.api.codec import GoCodec
            from bkcore.session.grpc_transport import SessionService

            manager = SessionManager()
            server = Server([SessionService(manager)], codec=GoCodec())
            await server.start(path=sock)
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CLIENT,
                sock,
                sid,
                str(src),
                str(agent_sock),
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                assert client.stdout is not None
                assert await client.stdout.readline() == b"attached\n"
                conn = await manager.get(sid, timeout=30)
                await sync_dir(conn.caller, "ctx", str(dst))
                async with forward_agent(conn.caller) as path:
                    proc = await asyncio.create_subprocess_exec(
                        "ssh-add",
                        "-l",
                        env={**os.environ, "SSH_AUTH_SOCK": path},
                        stdout=asyncio.subprocess.PIPE,
                    )
                    out, _ = await proc.communicate()
                    assert proc.returncode == 0
                secret = await get_secret(conn.caller, "tok")
                # the client process dies: the daemon releases its session
                client.send_signal(signal.SIGKILL)
                await client.wait()
                await conn.closed.wait()
                released = manager.ids() == []
            finally:
                if client.returncode is None:
                    client.kill()
                    await client.wait()
                server.close()
                await server.wait_closed()
            return out.decode(), secret, released

        listing, secret, released = asyncio.run(main())
    finally:
        agent.terminate()
        agent.wait()
        shutil.rmtree(sockdir, ignore_errors=True)
    assert "bk-proc-key" in listing and "ED25519" in listing
    assert secret == b"from-another-process"
    assert released
    out = subprocess.run(
        ["rsync", "-naicHX", "--delete", f"{src}/", f"{dst}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # the synced root's own mtime is not part of the protocol (no STAT for the root)
    assert [line for line in out.splitlines() if line != ".d..t...... ./"] == [], out
