"""git source processes: a cancelled git run leaves no process behind; scratch dirs of dead
processes are swept; git never sees the caller's git configuration or environment."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from bkcore.sources.git.access import sweep_tmp, tmpdir
from bkcore.sources.git.gitcmd import GitError, GitRunner

pytestmark = pytest.mark.integration

if shutil.which("git") is None:  # pragma: no cover - depends on the machine
    pytest.skip("git is not installed", allow_module_level=True)


def children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[1] == me:
            out.add(int(entry))
    return out


def test_cancelled_git_is_killed_and_reaped(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    runner = GitRunner(str(tmp_path))

    async def main() -> set[int]:
        before = children()
        task = asyncio.create_task(runner.run(["ls-remote", "--", f"git://127.0.0.1:{port}/x"]))
        conn = await asyncio.to_thread(server.accept)  # git is connected and waiting
        spawned = children() - before
        assert spawned, "git is not running"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        conn[0].close()
        return spawned

    try:
        spawned = asyncio.run(main())
    finally:
        server.close()
    for pid in spawned:
        assert not os.path.exists(f"/proc/{pid}"), f"git process {pid} is still there"


def test_git_ignores_the_callers_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "callerhome"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = from-caller\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'user.email'='leak@example.com'")
    private = tmp_path / "private"
    private.mkdir()
    runner = GitRunner(str(private), {"http.https://h/.extraheader": "Authorization: x"})

    async def config() -> str:
        return (await runner.run(["config", "--list"])).decode()

    listed = asyncio.run(config())
    assert "from-caller" not in listed and "leak@example.com" not in listed
    assert "http.https://h/.extraheader=Authorization: x" in listed
    with pytest.raises(GitError) as info:
        asyncio.run(runner.run(["ls-remote", "--", str(tmp_path / "missing")]))
    assert info.value.detail.startswith("fatal:")


def test_sweep_removes_only_dead_processes_scratch_dirs(tmp_path: Path) -> None:
    mine = Path(tmpdir(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / "git" / "tmp" / f"{dead.pid}-1-abc"
    stale.mkdir()
    (stale / "file").write_text("x")
    sweep_tmp(tmp_path)
    assert mine.is_dir()
    assert not stale.exists()
