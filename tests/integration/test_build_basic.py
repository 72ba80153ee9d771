"""``bkcore build`` end to end: golden vectors, every exec mount kind, process settings, exit
codes and both client-side exporters, through a real CLI subprocess and runc containers.

The ``bk`` fixture (tests/integration/conftest.py) runs the builds; graphs start from a
busybox rootfs sent as the local source ``rootfs``.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb

pytestmark = pytest.mark.integration

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"


def tree(root: Path) -> dict[str, str]:
    """Relative path -> "dir", "link:<target>" or the file's content (text)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = str(full.relative_to(root))
            if full.is_symlink():
                out[rel] = "link:" + os.readlink(full)
            elif full.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = full.read_text(errors="replace")
    return out


def test_vector_v1_builds_hello_txt(bk: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = bk.build((VECTORS / "v1_scratch_mkfile.llb").read_bytes(), out=out)
    assert tree(out) == {"hello.txt": "hello\n"}
    assert stat.S_IMODE((out / "hello.txt").stat().st_mode) == 0o644
    assert run.cached() == {"mkfile /hello.txt": False, "exporting to client directory": False}


def test_vector_v3_builds_the_fileop_chain_from_a_local_context(bk: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello from the context\n")
    (ctx / "not-included.txt").write_text("the include pattern keeps me out\n")
    out = tmp_path / "out"
    bk.build((VECTORS / "v3_fileop_chain.llb").read_bytes(), locals={"ctx": ctx}, out=out)
    # mkdir /a/b -> copy /hello.txt /a/b/ -> mkfile /a/f (chown 1000) -> rm /a/f
    assert tree(out) == {"a": "dir", "a/b": "dir", "a/b/hello.txt": "hello from the context\n"}
    assert stat.S_IMODE((out / "a" / "b").stat().st_mode) == 0o755


def test_tar_output_holds_the_result(bk: Any, tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    bk.build((VECTORS / "v1_scratch_mkfile.llb").read_bytes(), tar=dest)
    with tarfile.open(dest) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
        assert list(members) == ["hello.txt"]
        data = tar.extractfile(members["hello.txt"])
        assert data is not None and data.read() == b"hello\n"
        assert members["hello.txt"].mode == 0o644


def test_tar_output_to_stdout(bk: Any) -> None:
    run = bk.build((VECTORS / "v1_scratch_mkfile.llb").read_bytes(), tar="-")
    with tarfile.open(fileobj=io.BytesIO(run.stdout)) as tar:
        assert [m.name for m in tar.getmembers()] == ["hello.txt"]


def test_every_exec_mount_kind(bk: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("input\n")
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value")
    seed = llb.scratch().file(llb.mkfile("/seed.txt", 0o644, b"seed\n"))
    script = r"""
set -e
# read-only bind of a local source: readable, writes refused
cat /data/in.txt > /rw/copied.txt
if touch /data/new 2>/dev/null; then echo "ro bind was writable"; exit 1; fi
# writable bind: starts with its input, changes become the mount's output
cat /rw/seed.txt >> /rw/copied.txt
# cache mount: a directory that outlives the step
echo run >> /cache/runs
# tmpfs: really a tmpfs, and gone afterwards
grep -q " /scratch tmpfs " /proc/mounts
echo tmp > /scratch/tmp.txt
# secret: a read-only file readable by root only
test "$(cat /run/secrets/s)" = s3cr3t-value
stat -c %a /run/secrets/s > /rw/secret-mode
if echo x > /run/secrets/s 2>/dev/null; then echo "secret was writable"; exit 1; fi
echo rootfs > /root-file.txt
"""
    step = bk.base().sh(
        script,
        mounts=[
            llb.bind("/data", llb.local("data", custom_name="data"), readonly=True),
            llb.bind("/rw", seed),
            llb.cache("/cache", "mount-kinds-cache"),
            llb.tmpfs("/scratch"),
            llb.secret("/run/secrets/s", id="s"),
        ],
        custom_name="use every mount",
    )
    result = llb.scratch().file(
        llb.copy(step.get_mount("/rw"), "/", "/rw/", dir_contents_only=True, create_dest_path=True)
        .copy(step.root(), "/root-file.txt", "/root-file.txt")
        .mkdir("/rootfs-mountpoints", 0o755),
        custom_name="collect",
    )
    out = tmp_path / "out"
    bk.build(result, locals={"data": data}, secrets=[f"id=s,src={secret}"], out=out)
    assert tree(out) == {
        "rw": "dir",
        "rw/seed.txt": "seed\n",
        "rw/copied.txt": "input\nseed\n",
        "rw/secret-mode": "400\n",
        "root-file.txt": "rootfs\n",
        "rootfs-mountpoints": "dir",
    }

    # The rootfs output holds the process's writes but none of the mounts' contents.
    rootfs_out = tmp_path / "rootfs-out"
    bk.build(step.root(), locals={"data": data}, secrets=[f"id=s,src={secret}"], out=rootfs_out)
    assert (rootfs_out / "root-file.txt").read_text() == "rootfs\n"
    for mount in ("data/in.txt", "rw/seed.txt", "cache/runs", "scratch/tmp.txt", "run/secrets/s"):
        assert not (rootfs_out / mount).exists(), mount
    assert tree(rootfs_out / "bin") == tree(bk.rootfs_dir / "bin")


def test_cache_mount_persists_across_builds_and_processes(bk: Any, tmp_path: Path) -> None:
    def graph(n: int) -> Any:
        step = bk.base().sh(
            f"echo build{n} >> /cache/log; cp /cache/log /log",
            mounts=[llb.cache("/cache", "persisting")],
            custom_name=f"append {n}",
        )
        return llb.scratch().file(llb.copy(step.root(), "/log", "/log"))

    for n in (1, 2):
        bk.build(graph(n), out=tmp_path / f"out{n}")
    assert (tmp_path / "out2" / "log").read_text() == "build1\nbuild2\n"


def test_user_cwd_env_and_hostname(bk: Any, tmp_path: Path) -> None:
    step = (
        bk.base()
        .with_env("FROM_STATE", "state-value")
        .sh(
            'echo "$(id -u):$(id -g) $(pwd) $FOO $FROM_STATE $(hostname)" > /tmp/report;'
            ' stat -c "%u %a" . >> /tmp/report',
            env={"FOO": "bar"},
            cwd="/home/user/proj",
            user="user",
            hostname="buildhost",
            custom_name="report",
        )
    )
    result = llb.scratch().file(llb.copy(step.root(), "/tmp/report", "/report"))
    out = tmp_path / "out"
    bk.build(result, out=out)
    # The working directory is created for the process, owned by root (as BuildKit does).
    assert tree(out) == {"report": "1000:1000 /home/user/proj bar state-value buildhost\n0 755\n"}


def test_numeric_user_and_default_path(bk: Any, tmp_path: Path) -> None:
    step = bk.base().sh('echo "$(id -u) $PATH" > /tmp/r', user="4242:4343", custom_name="r")
    out = tmp_path / "out"
    bk.build(llb.scratch().file(llb.copy(step.root(), "/tmp/r", "/r")), out=out)
    owner = (out / "r").read_text().split()
    assert owner[0] == "4242"
    assert owner[1] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.mark.parametrize("code", [1, 3, 42])
def test_failing_step_exits_1_with_the_exit_code_and_output(
    bk: Any, tmp_path: Path, code: int
) -> None:
    step = bk.base().sh(
        f"echo visible-output; echo on-stderr >&2; exit {code}", custom_name="failing step"
    )
    out = tmp_path / "out"
    run = bk.build(step.root(), out=out, check=False)
    assert run.returncode == 1
    error = run.error_line()
    assert f"exit code: {code}" in error
    assert "/bin/sh -c echo visible-output" in error
    assert b"visible-output" in run.logs("failing step")
    assert b"on-stderr" in run.logs("failing step")
    assert run.by_name()["failing step"].get("error")
    assert not out.exists()  # the export never started


def test_failed_step_is_not_cached(bk: Any, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.mkdir()
    step = bk.base().sh(
        "test -e /flag/ok", mounts=[llb.bind("/flag", llb.local("flag"))], custom_name="gate"
    )
    assert bk.build(step.root(), locals={"flag": flag}, check=False).returncode == 1
    (flag / "ok").write_text("")
    run = bk.build(step.root(), locals={"flag": flag})
    assert run.cached()["gate"] is False


def test_missing_executable_is_one_clear_error(bk: Any) -> None:
    run = bk.build(bk.base().run(["/no/such/binary"]).root(), check=False)
    assert run.returncode == 1
    assert "no/such/binary" in run.error_line()
    assert "Traceback" not in run.stderr


def test_output_files_keep_content_hashes(bk: Any, tmp_path: Path) -> None:
    """A larger multi-file output arrives byte-identical (checked by sha256)."""
    step = bk.base().sh(
        "mkdir -p /gen && for i in 1 2 3 4 5; do head -c $((i * 70000)) /bin/busybox"
        " > /gen/f$i; done; sha256sum /gen/f* > /gen/SUMS",
        custom_name="generate",
    )
    out = tmp_path / "out"
    bk.build(
        llb.scratch().file(llb.copy(step.root(), "/gen", "/", dir_contents_only=True)), out=out
    )
    sums = dict(
        (line.split()[1].removeprefix("/gen/"), line.split()[0])
        for line in (out / "SUMS").read_text().splitlines()
    )
    assert sorted(sums) == ["f1", "f2", "f3", "f4", "f5"]
    for name, digest in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_ssh_agent_socket_is_forwarded(bk: Any, tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("ssh-agent") is None:
        pytest.skip("ssh-agent (openssh-client) not installed")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        while not sock.exists():
            assert agent.poll() is None, "ssh-agent did not start"
            time.sleep(0.01)
        step = bk.base().sh(
            'test -S "$SSH_AUTH_SOCK" && stat -c "%F %a %u" "$SSH_AUTH_SOCK" > /tmp/r'
            ' && echo "$SSH_AUTH_SOCK" >> /tmp/r',
            mounts=[llb.ssh(id="default", uid=1000, mode=0o600)],
            custom_name="use agent",
        )
        out = tmp_path / "out"
        bk.build(
            llb.scratch().file(llb.copy(step.root(), "/tmp/r", "/r")),
            ssh=[f"default={sock}"],
            out=out,
        )
    finally:
        agent.kill()
        agent.wait()
    assert (out / "r").read_text() == "socket 600 1000\n/run/buildkit/ssh_agent.0\n"
