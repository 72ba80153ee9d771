"""Exec mounts through ``bkcore build``: secrets, SSH sockets and cache mounts with --no-cache."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb

BUSYBOX = "/bin/busybox"
REPO = Path(__file__).resolve().parents[2]
SECRET = b"cli-secret-value-90210"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc binary not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="runc containers and overlay mounts need root"),
]

SCRIPT = (
    "wc -c < /run/secrets/tok > /out/report; "
    "stat -c '%a %u' /run/secrets/tok >> /out/report; "
    'printf %s "$ENVSEC" | wc -c >> /out/report; '
    "stat -c '%F %a %u' /run/buildkit/ssh_agent.0 >> /out/report; "
    "echo x >> /c/n; wc -l < /c/n >> /out/report; "
    "echo step-output-line"
)


def definition() -> bytes:
    base = llb.local("base", shared_key_hint="base")
    rootfs = llb.scratch().file(llb.copy(base, "/", "/", dir_contents_only=True))
    run = rootfs.sh(
        SCRIPT,
        mounts=[
            llb.secret("/run/secrets/tok", id="tok", uid=1000, mode=0o440),
            llb.ssh(uid=1000),
            llb.cache("/c", "execop-cli-counter"),
            llb.bind("/out", llb.scratch()),
        ],
        secret_env=[llb.secret_env("ENVSEC", id="tok")],
        custom_name="use secrets",
    )
    return run.get_mount("/out").marshal().to_bytes()


def make_rootfs(path: Path) -> None:
    (path / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    for applet in ("sh", "cat", "wc", "stat", "printf", "echo"):
        (path / "bin" / applet).symlink_to("busybox")


def build(
    bkcli: Any, tmp_path: Path, agent: str, *extra: str
) -> subprocess.CompletedProcess[bytes]:
    secret_file = tmp_path / "tok.txt"
    secret_file.write_bytes(SECRET)
    cmd = [
        *bkcli(tmp_path / "root"),
        "build",
        *extra,
        "--local",
        f"base={tmp_path / 'rootfs'}",
        "--secret",
        f"id=tok,src={secret_file}",
        "--ssh",
        f"default={agent}",
        "--output",
        f"type=local,dest={tmp_path / 'out'}",
        "--progress",
        "plain",
    ]
    return subprocess.run(cmd, input=definition(), capture_output=True, timeout=120, cwd=REPO)


def test_secrets_ssh_and_cache_mounts_through_the_cli(bkcli: Any, tmp_path: Path) -> None:
    make_rootfs(tmp_path / "rootfs")
    agent = str(tmp_path / "agent.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(agent)
    listener.listen()
    try:
        first = build(bkcli, tmp_path, agent)
        assert first.returncode == 0, first.stderr.decode()
        report = (tmp_path / "out" / "report").read_text().split("\n")
        assert report[:5] == [
            str(len(SECRET)),
            "440 1000",
            str(len(SECRET)),
            "socket 600 1000",
            "1",
        ]
        assert b"step-output-line" in first.stderr
        assert SECRET not in first.stderr + first.stdout
        fresh = build(bkcli, tmp_path, agent, "--no-cache")
        assert fresh.returncode == 0, fresh.stderr.decode()
        assert (tmp_path / "out" / "report").read_text().split("\n")[4] == "1"
    finally:
        listener.close()
    found = subprocess.run(
        ["grep", "-rl", SECRET.decode(), str(tmp_path / "root")], capture_output=True
    )
    assert found.stdout == b""
    assert found.returncode == 1
