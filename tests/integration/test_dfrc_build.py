"""RUN, COPY and ADD of the Dockerfile frontend end to end: ``bkcore build --frontend
dockerfile.v0`` with real runc, a docker-registry holding busybox-static images, a loopback
HTTP server (ADD of URLs, ``--checksum``) and ``git daemon`` (ADD of git repositories).

What the conformance cases (tests/conformance) do not cover: ADD of URLs and git
repositories, ``--checksum``, ``--keep-git-dir``, ``COPY --link``/``--parents``/``--exclude``,
a cache mount surviving builds, entitlements of ``--network=host``/``--security=insecure``,
and errors naming the Dockerfile line.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


#: A daemon allows both (as ``buildkitd --allow-insecure-entitlement``): the client's
#: ``--allow`` decides, in both modes.
DAEMON_ALLOWS = (
    "--allow-insecure-entitlement",
    "network.host",
    "--allow-insecure-entitlement",
    "security.insecure",
)


class Df:
    """Runs ``bkcore build --frontend dockerfile.v0`` on a context directory made per build."""

    def __init__(self, tmp: Path, base: str, bkcli: Any) -> None:
        self.tmp = tmp
        self.bkcli = bkcli
        self.base = base
        self.count = 0

    def run(
        self, dockerfile: str, files: dict[str, str | bytes] | None = None, *opts: str
    ) -> tuple[subprocess.CompletedProcess[str], Path]:
        self.count += 1
        ctx = self.tmp / f"ctx{self.count}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(dockerfile.replace("BASE", self.base))
        for name, content in (files or {}).items():
            path = ctx / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        dest = self.tmp / f"out{self.count}"
        argv = [
            *self.bkcli(self.tmp / "root", daemon_args=DAEMON_ALLOWS), "build",
            "--frontend", "dockerfile.v0", "--local", f"context={ctx}",
            "--local", f"dockerfile={ctx}", *opts, "--output", f"type=local,dest={dest}",
        ]  # fmt: skip
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, check=False, cwd=self.tmp
        )
        return proc, dest

    def ok(self, dockerfile: str, files: dict[str, str | bytes] | None = None, *opts: str) -> Path:
        proc, dest = self.run(dockerfile, files, *opts)
        assert proc.returncode == 0, proc.stderr
        return dest

    def fails(
        self, dockerfile: str, files: dict[str, str | bytes] | None = None, *opts: str
    ) -> str:
        proc, dest = self.run(dockerfile, files, *opts)
        assert proc.returncode == 1, proc.stderr
        assert not dest.exists()
        return proc.stderr


@pytest.fixture
def df(tmp_path: Path, registry: Any, images: Any, busybox_rootfs: Path, bkcli: Any) -> Df:
    if os.geteuid() != 0:
        pytest.skip("runc builds need root")
    ref = images.push(registry, "busybox:latest", images.busybox_image())
    return Df(tmp_path, ref, bkcli)


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def mode(p: Path) -> int:
    return p.lstat().st_mode & 0o7777


# ------------------------------------------------------------------------ ADD of URLs
def test_add_url_names_the_file_after_the_url_keeps_archives_packed_and_checks_checksums(
    df: Df, http_server: Any
) -> None:
    archive = tar_bytes({"inside.txt": b"packed\n"})
    arch_url = http_server.put("/dl/pkg.tar.gz", archive)
    note_url = http_server.put("/files/note.txt", b"from the web\n")
    good = "sha256:" + hashlib.sha256(b"from the web\n").hexdigest()
    out = df.ok(
        "FROM BASE\n"
        f"ADD {arch_url} {note_url} /dl/\n"
        f"ADD --checksum={good} --chown=1000:1000 {note_url} /checked.txt\n"
        "RUN busybox stat -c '%a %u:%g' /dl/note.txt /checked.txt > /stat.txt\n"
    )
    # a downloaded archive is not unpacked (only local archives are)
    assert (out / "dl" / "pkg.tar.gz").read_bytes() == archive
    assert not (out / "dl" / "inside.txt").exists()
    assert (out / "dl" / "note.txt").read_text() == "from the web\n"
    assert (out / "checked.txt").read_text() == "from the web\n"
    # downloads are 0600 (BuildKit's default for http sources), --chown applies
    assert (out / "stat.txt").read_text() == "600 0:0\n600 1000:1000\n"

    bad = "sha256:" + "0" * 64
    err = df.fails(f"FROM BASE\nRUN true\nADD --checksum={bad} {note_url} /x\n")
    assert "Dockerfile:3" in err
    assert "checksum" in err.lower() or "digest" in err.lower()


def test_add_local_archive_is_unpacked_and_copy_keeps_it(df: Df) -> None:
    archive = tar_bytes({"a/one.txt": b"1\n", "two.txt": b"2\n"})
    out = df.ok(
        "FROM BASE\nADD bundle.tgz /x/\nCOPY bundle.tgz /y/\n",
        {"bundle.tgz": archive},
    )
    assert (out / "x" / "a" / "one.txt").read_text() == "1\n"
    assert (out / "x" / "two.txt").read_text() == "2\n"
    assert (out / "y" / "bundle.tgz").read_bytes() == archive


# ------------------------------------------------------------------------ ADD of git repositories
def test_add_git_repository_at_a_tag_and_subdirectory_with_and_without_git_dir(
    df: Df, git_server: Any
) -> None:
    repo = git_server.repo("proj", {"README.md": "v1\n", "docs/guide.txt": "guide v1\n"})
    repo.tag("v1")
    repo.commit({"README.md": "v2\n"}, "second")
    out = df.ok(
        "FROM BASE\n"
        f"ADD {repo.url}#v1 /src/\n"
        f"ADD {repo.url}#v1:docs /docs/\n"
        f"ADD --keep-git-dir=true {repo.url} /full/\n"
    )
    assert (out / "src" / "README.md").read_text() == "v1\n"
    assert not (out / "src" / ".git").exists()
    assert sorted(os.listdir(out / "docs")) == ["guide.txt"]
    assert (out / "full" / "README.md").read_text() == "v2\n"
    assert (out / "full" / ".git").is_dir()


# ------------------------------------------------------------------------ COPY options
def test_copy_link_parents_exclude_and_heredoc(df: Df) -> None:
    files: dict[str, str | bytes] = {
        "app/a/x.txt": "ax\n",
        "app/a/skip.tmp": "tmp\n",
        "app/b/y.txt": "by\n",
        "app/b/deep/z.txt": "z\n",
        "lk.txt": "linked\n",
    }
    out = df.ok(
        "FROM BASE\n"
        "RUN mkdir /payload && echo base > /payload/base.txt\n"
        "COPY --link --chown=1000:1000 lk.txt /payload/\n"
        "COPY --parents app/*/x.txt app/b/y.txt /kept/\n"
        "COPY --parents ./app/./b/deep /pivot/\n"
        "COPY --exclude=**/*.tmp --exclude=b/deep app/ /filtered/\n"
        "COPY --chmod=0755 <<EOF /bin/hello\n#!/bin/sh\necho heredoc-run\nEOF\n"
        "RUN /bin/hello > /hello.out && busybox stat -c '%u:%g' /payload/lk.txt > /lk.owner\n",
        files,
    )
    assert (out / "payload" / "base.txt").read_text() == "base\n"  # merged, not replaced
    assert (out / "payload" / "lk.txt").read_text() == "linked\n"
    assert (out / "lk.owner").read_text() == "1000:1000\n"
    assert (out / "kept" / "app" / "a" / "x.txt").read_text() == "ax\n"
    assert (out / "kept" / "app" / "b" / "y.txt").read_text() == "by\n"
    assert not (out / "kept" / "app" / "a" / "skip.tmp").exists()
    assert (out / "pivot" / "b" / "deep" / "z.txt").read_text() == "z\n"
    assert not (out / "pivot" / "app").exists()
    # exclude patterns follow .dockerignore rules: "**/" reaches into subdirectories
    got = sorted(
        str(p.relative_to(out / "filtered")) for p in (out / "filtered").rglob("*") if p.is_file()
    )
    assert got == ["a/x.txt", "b/y.txt"]
    assert (out / "hello.out").read_text() == "heredoc-run\n"
    assert mode(out / "bin" / "hello") == 0o755


def test_copy_of_a_missing_file_names_the_line(df: Df) -> None:
    err = df.fails("FROM BASE\n\nCOPY present.txt /\nCOPY absent.txt /\n", {"present.txt": "x"})
    assert "Dockerfile:4" in err
    assert "not found" in err


# ------------------------------------------------------------------------ RUN mounts and modes
def test_cache_mount_survives_builds_and_secret_mount_stays_out_of_the_layer(
    df: Df, tmp_path: Path
) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t")
    dockerfile = (
        "FROM BASE\n"
        "ARG RUNNO\n"
        "RUN --mount=type=cache,id=dfrc-it,target=/var/cache/app "
        "echo run-$RUNNO >> /var/cache/app/log && busybox cat /var/cache/app/log > /seen.txt\n"
        "RUN --mount=type=secret,id=tok,mode=0440,uid=1000 "
        "busybox stat -c '%a %u' /run/secrets/tok > /secret.stat "
        "&& busybox wc -c < /run/secrets/tok > /secret.len\n"
    )
    sec = f"id=tok,src={secret}"
    first = df.ok(dockerfile, None, "--opt", "build-arg:RUNNO=1", "--secret", sec)
    assert (first / "seen.txt").read_text() == "run-1\n"
    assert (first / "secret.stat").read_text() == "440 1000\n"
    assert (first / "secret.len").read_text().strip() == "6"
    assert not (first / "run" / "secrets").exists()
    assert not (first / "var" / "cache" / "app").exists()  # the mount point is no content
    second = df.ok(dockerfile, None, "--opt", "build-arg:RUNNO=2", "--secret", sec)
    assert (second / "seen.txt").read_text() == "run-1\nrun-2\n"


def test_required_secret_missing_fails_with_the_line(df: Df) -> None:
    err = df.fails("FROM BASE\nRUN --mount=type=secret,id=must,required=true true\n")
    assert "must" in err
    assert "Dockerfile:2" in err


def test_host_network_and_insecure_need_entitlements(df: Df) -> None:
    host = "FROM BASE\nRUN --network=host busybox cat /proc/net/dev > /devs\n"
    err = df.fails(host)
    assert "network.host" in err
    out = df.ok(host, None, "--allow", "network.host")
    assert (out / "devs").read_text().count(":") >= 1
    none = df.ok("FROM BASE\nRUN --network=none busybox cat /proc/net/dev > /devs\n")
    # only the loopback interface (two header lines + lo)
    assert [ln.split(":")[0].strip() for ln in (none / "devs").read_text().splitlines()[2:]] == [
        "lo"
    ]
    insecure = (
        "FROM BASE\nRUN --security=insecure busybox grep CapEff /proc/self/status > /insecure\n"
        "RUN busybox grep CapEff /proc/self/status > /sandbox\n"
    )
    assert "security.insecure" in df.fails(insecure)
    out = df.ok(insecure, None, "--allow", "security.insecure")
    full = int((out / "insecure").read_text().split()[1], 16)
    sandbox = int((out / "sandbox").read_text().split()[1], 16)
    assert full & sandbox == sandbox and full != sandbox  # privileged: more capabilities


def test_ssh_mount_forwards_the_agent(df: Df, tmp_path: Path) -> None:
    import shutil
    import time

    if shutil.which("ssh-agent") is None:
        pytest.skip("ssh-agent (openssh-client) not installed")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        while not sock.exists():
            assert agent.poll() is None, "ssh-agent did not start"
            time.sleep(0.01)
        out = df.ok(
            "FROM BASE\n"
            "RUN --mount=type=ssh,uid=1000 busybox stat -c '%F %u' $SSH_AUTH_SOCK > /agent "
            '&& echo "$SSH_AUTH_SOCK" >> /agent\n'
            "RUN --mount=type=ssh,id=other,target=/run/other.sock "
            "(busybox test -S /run/other.sock && echo yes || echo no) > /other\n",
            None,
            "--ssh",
            f"default={sock}",
        )
        assert (out / "agent").read_text() == "socket 1000\n/run/buildkit/ssh_agent.0\n"
        # an optional agent the client does not forward is simply absent
        assert (out / "other").read_text() == "no\n"
        err = df.fails(
            "FROM BASE\nRUN --mount=type=ssh,id=other,required=true true\n",
            None,
            "--ssh",
            f"default={sock}",
        )
        assert "other" in err and "Dockerfile:2" in err
    finally:
        agent.kill()
        agent.wait()


def test_build_wide_hosts_shm_and_ulimits_reach_run(df: Df) -> None:
    out = df.ok(
        "FROM BASE\nRUN busybox cat /etc/hosts > /hosts && busybox df -k /dev/shm > /shm "
        "&& ulimit -n > /nofile\n",
        None,
        "--opt",
        "add-hosts=db.local=10.0.0.7",
        "--opt",
        "shm-size=67108864",
        "--opt",
        "ulimit=nofile=1024:2048",
    )
    assert "10.0.0.7\tdb.local" in (out / "hosts").read_text()
    assert (out / "shm").read_text().splitlines()[-1].split()[1] == "65536"
    assert (out / "nofile").read_text() == "1024\n"
