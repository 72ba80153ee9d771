"""The git:// source through `bkcore build`: a bare repository served by `git daemon` on
loopback and through the file transport; branch, tag, commit, keepgitdir, subdir,
submodules, commit-keyed caching across processes, refused option-like refs, missing refs
and the auth token header (seen by a small HTTP server, never in the output)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb
from bkcore.llb.sourceop import OpMeta, SourceOp, _state

pytestmark = pytest.mark.integration

if shutil.which("git") is None:  # pragma: no cover - depends on the machine
    pytest.skip("git is not installed", allow_module_level=True)

GIT = [
    "git",
    "-c",
    "user.name=t",
    "-c",
    "user.email=t@example.com",
    "-c",
    "init.defaultBranch=main",
]


def git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [*GIT, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd or "/nonexistent")},
    )
    return proc.stdout.strip()


def write(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Remote:
    work: Path  # the working repository commits are made in
    bare: Path  # the served bare repository
    url: str  # git://127.0.0.1:PORT/example.git
    v1: str  # commit of tag v1 (annotated)
    main: str  # commit of branch main

    def commit(self, files: dict[str, str], message: str) -> str:
        write(self.work, files)
        git("add", ".", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", str(self.bare), "main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", str(work), cwd=tmp_path)
    write(work, {"README.md": "# v1\n", "src/a.txt": "alpha\n"})
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "one", cwd=work)
    git("tag", "-a", "-m", "first", "v1", cwd=work)
    v1 = git("rev-parse", "HEAD", cwd=work)
    write(work, {"README.md": "# v2\n", "src/b.txt": "beta\n", "src/deep/c.txt": "gamma\n"})
    os.chmod(work / "src" / "b.txt", 0o755)
    os.symlink("a.txt", work / "src" / "link")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "two", cwd=work)
    main = git("rev-parse", "HEAD", cwd=work)
    repos = tmp_path / "repos"
    repos.mkdir()
    bare = repos / "example.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    port = free_port()
    url = f"git://127.0.0.1:{port}/example.git"
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={repos}",
         "--listen=127.0.0.1", f"--port={port}", str(repos)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["git", "ls-remote", url], capture_output=True).returncode:
            assert daemon.poll() is None, "git daemon exited"
            assert time.monotonic() < deadline, "git daemon did not come up"
            time.sleep(0.1)
        yield Remote(work, bare, url, v1, main)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def git_state(ident_rest: str, fullurl: str, *, keep: bool = False) -> llb.State:
    """A git source op written directly (the SDK's llb.git prefixes scheme-less remotes
    such as file:// with https://)."""
    attrs = {"git.fullurl": fullurl}
    if keep:
        attrs["git.keepgitdir"] = "true"
    return _state(SourceOp("git://" + ident_rest, attrs, {"source.git"}, meta=OpMeta()))


@dataclass
class Built:
    ok: bool
    stderr: str
    cached: dict[str, bool]  # vertex name -> cached
    statuses: list[str]  # status ids, in order of first appearance


def build(bkcli: Any, state: llb.State, root: Path, out: Path, *extra: str) -> Built:
    data = state.marshal().to_bytes()
    args = [*bkcli(root), "build", "--progress", "rawjson",
            "--output", f"type=local,dest={out}", *extra]  # fmt: skip
    proc = subprocess.run(args, input=data, capture_output=True, timeout=120)
    cached: dict[str, bool] = {}
    statuses: list[str] = []
    for line in (proc.stdout + proc.stderr).decode(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        for v in event.get("vertexes", []):
            if v.get("completed") and v.get("name"):
                cached[v["name"]] = bool(v.get("cached"))
        for st in event.get("statuses", []):
            # the git source's statuses (not the local export's "copying files NB")
            if st["id"] not in statuses and st["id"] != "copying files":
                statuses.append(st["id"])
    return Built(proc.returncode == 0, proc.stderr.decode(errors="replace"), cached, statuses)


def files(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel == ".git" or rel.startswith(".git/"):
            continue
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_text()
    return out


def the_git_vertex(built: Built) -> bool:
    names = [n for n in built.cached if n.startswith("git://")]
    assert len(names) == 1, built.cached
    return built.cached[names[0]]


V2 = {
    "README.md": "# v2\n",
    "src/a.txt": "alpha\n",
    "src/b.txt": "beta\n",
    "src/deep/c.txt": "gamma\n",
    "src/link": "-> a.txt",
}


def test_branch_tag_and_commit_over_git_daemon(bkcli: Any, remote: Remote, tmp_path: Path) -> None:
    root = tmp_path / "state"
    out = tmp_path / "branch"
    built = build(bkcli, llb.git(remote.url, "main"), root, out)
    assert built.ok, built.stderr
    assert files(out) == V2
    assert not (out / ".git").exists()
    assert built.statuses == ["resolving main", f"fetching {remote.main[:12]}",
                              f"checking out {remote.main[:12]}"]  # fmt: skip
    assert os.access(out / "src" / "b.txt", os.X_OK) and not os.access(out / "README.md", os.X_OK)

    tag = tmp_path / "tag"
    built = build(bkcli, llb.git(remote.url, "v1"), root, tag)
    assert built.ok, built.stderr
    assert files(tag) == {"README.md": "# v1\n", "src/a.txt": "alpha\n"}

    # A commit id is keyed without contacting the remote: the v1 checkout is reused even
    # with the daemon's repository gone.
    shutil.rmtree(remote.bare)
    by_commit = tmp_path / "commit"
    built = build(bkcli, llb.git(remote.url, remote.v1), root, by_commit)
    assert built.ok, built.stderr
    assert the_git_vertex(built) is True
    assert files(by_commit) == files(tag)


def test_commit_not_fetched_yet_is_fetched(bkcli: Any, remote: Remote, tmp_path: Path) -> None:
    out = tmp_path / "out"
    built = build(bkcli, llb.git(remote.url, remote.v1), tmp_path / "state", out)
    assert built.ok, built.stderr
    assert files(out) == {"README.md": "# v1\n", "src/a.txt": "alpha\n"}


def test_keepgitdir_keeps_a_working_repository(bkcli: Any, remote: Remote, tmp_path: Path) -> None:
    out = tmp_path / "out"
    built = build(bkcli, llb.git(remote.url, "main", keep_git_dir=True), tmp_path / "state", out)
    assert built.ok, built.stderr
    assert (out / ".git").is_dir()
    assert git("rev-parse", "HEAD", cwd=out) == remote.main
    assert git("symbolic-ref", "--short", "HEAD", cwd=out) == "main"
    assert git("remote", "get-url", "origin", cwd=out) == remote.url
    assert git("status", "--porcelain", cwd=out) == ""
    assert files(out) == V2


def test_subdir_checks_out_only_that_directory(bkcli: Any, remote: Remote, tmp_path: Path) -> None:
    root = tmp_path / "state"
    out = tmp_path / "out"
    built = build(bkcli, llb.git(remote.url, "main:src"), root, out)
    assert built.ok, built.stderr
    assert files(out) == {"a.txt": "alpha\n", "b.txt": "beta\n", "deep/c.txt": "gamma\n",
                          "link": "-> a.txt"}  # fmt: skip
    missing = build(bkcli, llb.git(remote.url, "main:nope"), root, tmp_path / "missing")
    assert not missing.ok
    assert f"{remote.url}#main:nope: subdirectory 'nope' not found" in missing.stderr


def test_cache_key_follows_the_commit(bkcli: Any, remote: Remote, tmp_path: Path) -> None:
    root = tmp_path / "state"
    first = build(bkcli, llb.git(remote.url, "main"), root, tmp_path / "1")
    assert first.ok, first.stderr
    assert the_git_vertex(first) is False
    second = build(bkcli, llb.git(remote.url, "main"), root, tmp_path / "2")
    assert second.ok, second.stderr
    assert the_git_vertex(second) is True
    assert files(tmp_path / "2") == V2

    new = remote.commit({"README.md": "# v3\n"}, "three")
    third = build(bkcli, llb.git(remote.url, "main"), root, tmp_path / "3")
    assert third.ok, third.stderr
    assert the_git_vertex(third) is False
    assert (tmp_path / "3" / "README.md").read_text() == "# v3\n"
    # the same commit named by its id: same key, cached
    fourth = build(bkcli, llb.git(remote.url, new), root, tmp_path / "4")
    assert fourth.ok, fourth.stderr
    assert the_git_vertex(fourth) is True
    # the old commit is still cached under its own key
    fifth = build(bkcli, llb.git(remote.url, remote.main), root, tmp_path / "5")
    assert the_git_vertex(fifth) is True
    assert files(tmp_path / "5") == V2


def test_file_transport_with_a_submodule(bkcli: Any, remote: Remote, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    git("init", "-q", "-b", "main", str(lib), cwd=tmp_path)
    write(lib, {"lib.txt": "library\n"})
    git("add", ".", cwd=lib)
    git("commit", "-q", "-m", "lib", cwd=lib)
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", f"file://{lib}", "vendor/lib",
        cwd=remote.work)  # fmt: skip
    remote.commit({}, "add submodule")
    url = f"file://{remote.bare}"
    out = tmp_path / "out"
    built = build(bkcli, git_state("localhost/example.git#main", url), tmp_path / "state", out)
    assert built.ok, built.stderr
    got = files(out)
    assert got["vendor/lib/lib.txt"] == "library\n"
    assert got["README.md"] == "# v2\n"
    assert not (out / ".git").exists() and not (out / "vendor" / "lib" / ".git").exists()


def test_option_like_ref_or_url_is_refused(bkcli: Any, remote: Remote, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = tmp_path / "state"
    bad = build(bkcli, llb.git(remote.url, f"--upload-pack=touch {marker}"), root, tmp_path / "o")
    assert not bad.ok
    assert "looks like an option" in bad.stderr
    bad_url = build(
        bkcli, git_state("x/y#main", f"--upload-pack=touch {marker}"), root, tmp_path / "p"
    )
    assert not bad_url.ok
    assert "looks like an option" in bad_url.stderr
    assert not marker.exists()
    assert not (root / "git" / "remotes").exists()


def test_missing_ref_is_one_clear_line(bkcli: Any, remote: Remote, tmp_path: Path) -> None:
    built = build(bkcli, llb.git(remote.url, "nope"), tmp_path / "state", tmp_path / "o")
    assert not built.ok
    assert f"{remote.url}#nope: ref not found" in built.stderr
    assert not (tmp_path / "o").exists()


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_auth_token_secret_becomes_a_header_only_in_gits_environment(
    bkcli: Any, tmp_path: Path
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/repo.git"
        token = "s3cr3t-t0ken-value"
        secret = tmp_path / "token"
        secret.write_text(token + "\n")
        root = tmp_path / "state"
        with_token = build(bkcli, llb.git(url, "main"), root, tmp_path / "o",
                           "--secret", f"id=GIT_AUTH_TOKEN,src={secret}")  # fmt: skip
        assert not with_token.ok
        expected = "basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
        assert expected in _Recorder.seen
        assert token not in with_token.stderr and expected not in with_token.stderr
        assert f"{url.removeprefix('http://')}#main: cannot list the remote's refs" in (
            with_token.stderr
        )
        _Recorder.seen = []
        header = tmp_path / "header"
        header.write_text("bearer h3ad3r-value")
        with_header = build(bkcli, llb.git(url, "main"), root, tmp_path / "q",
                            "--secret", f"id=GIT_AUTH_TOKEN,src={secret}",
                            "--secret", f"id=GIT_AUTH_HEADER,src={header}")  # fmt: skip
        assert not with_header.ok
        assert _Recorder.seen and set(_Recorder.seen) == {"bearer h3ad3r-value"}
        assert "h3ad3r" not in with_header.stderr
        _Recorder.seen = []
        without = build(bkcli, llb.git(url, "main"), root, tmp_path / "p")
        assert not without.ok
        assert _Recorder.seen and all(h is None for h in _Recorder.seen)
    finally:
        server.shutdown()
        server.server_close()


def test_file_submodule_of_a_network_remote_is_refused(
    bkcli: Any, remote: Remote, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    git("init", "-q", "-b", "main", str(lib), cwd=tmp_path)
    write(lib, {"secret.txt": "host file\n"})
    git("add", ".", cwd=lib)
    git("commit", "-q", "-m", "lib", cwd=lib)
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", f"file://{lib}", "lib",
        cwd=remote.work)  # fmt: skip
    remote.commit({}, "add a host-local submodule")
    built = build(bkcli, llb.git(remote.url, "main"), tmp_path / "state", tmp_path / "o")
    assert not built.ok
    assert f"{remote.url}#main: submodule update failed" in built.stderr
    assert not (tmp_path / "o").exists()


def test_ssh_remote_without_a_forwarded_agent_fails_clearly(bkcli: Any, tmp_path: Path) -> None:
    built = build(
        bkcli, llb.git("git@127.0.0.1:org/repo.git", "main"), tmp_path / "s", tmp_path / "o"
    )
    assert not built.ok
    assert "git://127.0.0.1/org/repo.git#main: ssh agent 'default' unavailable" in built.stderr


def test_two_processes_fetch_one_remote_at_once(bkcli: Any, remote: Remote, tmp_path: Path) -> None:
    root = tmp_path / "state"
    data = llb.git(remote.url, "main").marshal().to_bytes()
    procs = [
        subprocess.Popen(
            [
                *bkcli(root),
                "build",
                "--progress",
                "plain",
                "--output",
                f"type=local,dest={tmp_path / f'o{i}'}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    outs = [p.communicate(data, timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode(errors="replace")
    assert files(tmp_path / "o0") == files(tmp_path / "o1") == V2
    assert len(list((root / "git" / "remotes").iterdir())) == 1
    assert list((root / "git" / "tmp").iterdir()) == []
