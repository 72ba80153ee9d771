"""Sessions against real tools: an OpenSSH agent through the forwarded socket, and rsync
checking that a synced tree is identical to its source."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bkcore.session import Session
from bkcore.session.filesync import sync_dir
from bkcore.session.sshforward import forward_agent
from bkcore.sessions.filesync import FileSyncProvider
from bkcore.sessions.sshforward import SSHProvider

pytestmark = pytest.mark.integration


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not installed)")


def test_ssh_add_lists_keys_through_forwarded_agent(tmp_path: Path) -> None:
    need("ssh-agent", "ssh-add", "ssh-keygen")
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bk-test-key", "-f", str(key)],
        check=True,
    )
    agent_sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if agent_sock.exists():
                break
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(agent_sock)}
        subprocess.run(["ssh-add", "-q", str(key)], check=True, env=env)

        session = Session()
        session.allow(SSHProvider({"default": str(agent_sock)}))

        async def main() -> str:
            async with forward_agent(session.caller()) as path:
                proc = await asyncio.create_subprocess_exec(
                    "ssh-add",
                    "-l",
                    env={**os.environ, "SSH_AUTH_SOCK": path},
                    stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await proc.communicate()
                assert proc.returncode == 0
                return out.decode()

        listing = asyncio.run(main())
        assert "bk-test-key" in listing and "ED25519" in listing
    finally:
        agent.terminate()
        agent.wait()


def test_synced_tree_is_identical_for_rsync(tmp_path: Path) -> None:
    need("rsync")
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty").mkdir()
    for i in range(50):
        (src / "a" / f"f{i}").write_bytes(os.urandom(i * 997))
    (src / "a" / "b" / "x").write_bytes(b"x")
    os.chmod(src / "a" / "b" / "x", 0o4750)
    os.symlink("a/b/x", src / "l")
    os.link(src / "a" / "f3", src / "h")
    os.setxattr(src / "a" / "f1", "user.k", b"v")
    session = Session()
    session.allow(FileSyncProvider({"ctx": str(src)}))
    asyncio.run(sync_dir(session.caller(), "ctx", str(dst)))
    # -c compares content, -a perms/times/links/owners, -H hard links, -X xattrs
    out = subprocess.run(
        ["rsync", "-naicHX", "--delete", f"{src}/", f"{dst}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip() == "", out
