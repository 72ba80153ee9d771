"""scripts/make-rootfs makes a usable, reproducible busybox rootfs, and every example builds
end to end on it with `bkcore build` (runc containers, local exporter) to the files its
docstring promises."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MAKE_ROOTFS = REPO / "scripts" / "make-rootfs"
BUSYBOX = "/bin/busybox"

if not os.path.exists(BUSYBOX):  # pragma: no cover - depends on the machine
    pytest.skip("busybox-static (/bin/busybox) is not installed", allow_module_level=True)


def make_rootfs(dest: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAKE_ROOTFS), *args, str(dest)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )


def listing(root: Path) -> list[tuple[str, str, int, int, int, int, str]]:
    """(path, type, mode, uid, gid, mtime, link target or sha256) of every entry."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            p = Path(dirpath, name)
            st = p.lstat()
            if p.is_symlink():
                kind, extra = "l", os.readlink(p)
            elif p.is_dir():
                kind, extra = "d", ""
            else:
                kind, extra = "f", hashlib.sha256(p.read_bytes()).hexdigest()
            rel = str(p.relative_to(root))
            out.append(
                (rel, kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns, extra)
            )
    return out


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("rootfs") / "rootfs"
    proc = make_rootfs(dest)
    assert proc.returncode == 0, proc.stderr
    return dest


# --- scripts/make-rootfs -------------------------------------------------------------------


def test_rootfs_layout(rootfs: Path) -> None:
    busybox = rootfs / "bin" / "busybox"
    assert busybox.read_bytes() == Path(BUSYBOX).read_bytes()
    assert os.access(busybox, os.X_OK)
    applets = subprocess.run(
        [BUSYBOX, "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for path in (p for p in applets if "/" in p and p != "bin/busybox"):
        assert os.readlink(rootfs / path) == "/bin/busybox", path
    assert not (rootfs / "linuxrc").exists()
    passwd = (rootfs / "etc" / "passwd").read_text().splitlines()
    assert "root:x:0:0:root:/root:/bin/sh" in passwd
    assert "user:x:1000:1000:user:/home/user:/bin/sh" in passwd
    group = (rootfs / "etc" / "group").read_text().splitlines()
    assert "root:x:0:" in group and "user:x:1000:" in group
    tmp = (rootfs / "tmp").stat()
    assert tmp.st_mode & 0o7777 == 0o1777
    home = (rootfs / "home" / "user").stat()
    assert (home.st_uid, home.st_gid) == (1000, 1000)
    entries = listing(rootfs)
    assert {e[5] for e in entries} == {0}  # every mtime, symlinks included
    assert rootfs.stat().st_mtime_ns == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_rootfs_runs_busybox_and_knows_its_users(rootfs: Path) -> None:
    proc = subprocess.run(
        ["chroot", str(rootfs), "/bin/sh", "-c", "id user; awk 'BEGIN { print 6 * 7 }'"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=True,
    )
    assert proc.stdout.splitlines() == ["uid=1000(user) gid=1000(user) groups=1000(user)", "42"]


def test_rootfs_is_reproducible_and_replaces_only_a_rootfs(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert make_rootfs(first, SOURCE_DATE_EPOCH="1700000000").returncode == 0
    time.sleep(0.01)
    assert make_rootfs(second, SOURCE_DATE_EPOCH="1700000000").returncode == 0
    tree = listing(first)
    assert tree == listing(second)
    assert {e[5] for e in tree} == {1700000000 * 10**9}
    # a rebuild over an earlier rootfs replaces it (stray files go), leaving no temp dirs
    (first / "stray").write_text("x")
    assert make_rootfs(first, SOURCE_DATE_EPOCH="1700000000").returncode == 0
    assert listing(first) == tree
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    # any other non-empty directory is refused and left alone
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep").write_text("k")
    proc = make_rootfs(other)
    assert proc.returncode == 1
    assert "does not look like a rootfs" in proc.stderr
    assert [p.name for p in other.iterdir()] == ["keep"]
    assert make_rootfs(tmp_path / "c", "--busybox", str(tmp_path / "nope")).returncode == 1


# --- the examples, built by bkcore build ---------------------------------------------------


def example_llb(name: str, **env: str) -> bytes:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BKCORE_")}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        capture_output=True,
        env={**clean, "BKCORE_BASE": "local", **env},
        check=True,
    ).stdout


def bkcore_build(
    bkcli: Any, llb_bytes: bytes, store: Path, dest: Path, locals_: dict[str, Path], *extra: str
) -> None:
    if shutil.which("runc") is None:  # pragma: no cover - depends on the machine
        pytest.skip("runc is not installed")
    args = [*bkcli(store), "build", "--progress", "plain"]
    for name, path in locals_.items():
        args += ["--local", f"{name}={path}"]
    args += ["--output", f"type=local,dest={dest}", *extra]
    proc = subprocess.run(args, input=llb_bytes, capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def stores() -> dict[str, Path]:
    return {}


@pytest.fixture
def store(
    stores: dict[str, Path], build_mode: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One bkcore state directory shared by the builds of this module (one per build mode)."""
    if build_mode not in stores:
        stores[build_mode] = tmp_path_factory.mktemp(f"store-{build_mode}")
    return stores[build_mode]


def tree_of(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_multistage_builds_and_is_cached_across_processes(
    bkcli: Any, rootfs: Path, store: Path, tmp_path: Path
) -> None:
    data = example_llb("multistage")
    out = tmp_path / "out"
    bkcore_build(bkcli, data, store, out, {"base": rootfs})
    assert tree_of(out) == {"dist", "dist/site.tar.gz", "dist/SHA256SUMS", "dist/README"}
    archive = (out / "dist" / "site.tar.gz").read_bytes()
    digest = hashlib.sha256(archive).hexdigest()
    assert (out / "dist" / "SHA256SUMS").read_text() == f"{digest}  site.tar.gz\n"
    assert (out / "dist" / "README").read_text().startswith("site.tar.gz: the generated site")
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        assert {n for n, m in members.items() if m.isfile()} == {
            "pages/page1.html",
            "pages/page2.html",
            "pages/page3.html",
            "bin/hello",
            "NAME",
        }
        assert members["bin/hello"].mode & 0o777 == 0o755
        name = tar.extractfile(members["NAME"])
        assert name is not None and name.read() == b"bkcore-example\n"
        page = tar.extractfile(members["pages/page2.html"])
        assert page is not None and page.read() == b"<h1>page 2</h1>\n"
    # the archive holds the generation time of its files: an identical archive from a new
    # process a second later means the steps came from the cache, --no-cache runs them again
    time.sleep(1.1)
    again = tmp_path / "again"
    bkcore_build(bkcli, example_llb("multistage"), store, again, {"base": rootfs})
    assert (again / "dist" / "site.tar.gz").read_bytes() == archive
    fresh = tmp_path / "fresh"
    bkcore_build(bkcli, example_llb("multistage"), store, fresh, {"base": rootfs}, "--no-cache")
    assert (fresh / "dist" / "site.tar.gz").read_bytes() != archive


def test_dockerfile_example_builds_on_the_rootfs_as_a_named_context(
    bkcli: Any, rootfs: Path, store: Path, tmp_path: Path
) -> None:
    """examples/dockerfile (what scripts/demo builds): `busybox` replaced by the rootfs through
    `--opt context:busybox=local:rootfs`; a heredoc RUN with a cache mount, then scratch."""
    ctx = EXAMPLES / "dockerfile"
    out = tmp_path / "out"
    frontend = [
        "--frontend", "dockerfile.v0", "--local", f"context={ctx}", "--local",
        f"dockerfile={ctx}", "--opt", "context:busybox=local:rootfs",
    ]  # fmt: skip
    bkcore_build(bkcli, b"", store, out, {"rootfs": rootfs}, *frontend)
    assert tree_of(out) == {"shout.txt", "info.txt"}
    assert (out / "shout.txt").read_text() == (ctx / "hello.txt").read_text().upper()
    assert (out / "info.txt").read_text() == "built by root in /src\n"


def test_merge_diff_keeps_only_what_the_command_added(
    bkcli: Any, rootfs: Path, store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    bkcore_build(bkcli, example_llb("merge_diff"), store, out, {"base": rootfs})
    assert tree_of(out) == {
        "opt",
        "opt/tool",
        "opt/tool/run",
        "etc",
        "etc/tool",
        "etc/tool/config",
    }
    assert (out / "opt" / "tool" / "run").read_text() == "echo tool v1\n"
    assert os.access(out / "opt" / "tool" / "run", os.X_OK)
    assert (out / "etc" / "tool" / "config").read_text() == "mode=example\n"
    assert (out / "etc" / "tool" / "config").stat().st_mode & 0o777 == 0o644


def test_local_source_manifest_lists_the_context(
    bkcli: Any, rootfs: Path, store: Path, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    files = {
        "main.c": b"int main(void) { return 0; }\n",
        "docs/readme.md": b"# readme\n",
        "docs/deep/data.bin": bytes(range(256)) * 5,
    }
    for rel, content in files.items():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        (context / rel).write_bytes(content)
    (context / "scratch.tmp").write_text("excluded by *.tmp")
    (context / ".git").mkdir()
    (context / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    out = tmp_path / "out"
    bkcore_build(
        bkcli, example_llb("local_source"), store, out, {"base": rootfs, "context": context}
    )
    assert tree_of(out) == {"manifest.txt", "count.txt"}
    expected = sorted(
        f"{hashlib.sha256(content).hexdigest()}  ./{rel}" for rel, content in files.items()
    )
    manifest = (out / "manifest.txt").read_text().splitlines()
    # `find | sort` in the container sorts by path
    assert sorted(manifest) == expected
    assert [line.split("  ", 1)[1] for line in manifest] == sorted(f"./{r}" for r in files)
    assert (out / "count.txt").read_text().strip() == str(len(files))


def test_readme_example_runs_a_step_as_the_rootfs_user(
    bkcli: Any, rootfs: Path, store: Path, tmp_path: Path
) -> None:
    # the README's SDK example: a user from the rootfs's /etc/passwd, cwd, env and a copy
    script = tmp_path / "hello.py"
    script.write_text(README_EXAMPLE)
    data = subprocess.run([sys.executable, str(script)], capture_output=True, check=True).stdout
    out = tmp_path / "out"
    bkcore_build(bkcli, data, store, out, {"base": rootfs})
    assert tree_of(out) == {"greeting.txt"}
    assert (out / "greeting.txt").read_text() == "hello from user (uid 1000) in /tmp\n"


README_EXAMPLE = """\
import sys

from bkcore import llb

base = llb.local("base")  # a rootfs: scripts/make-rootfs DIR, then --local base=DIR
greeting = (
    base.with_env("GREETING", "hello")
    .with_cwd("/tmp")
    .with_user("user")
    .sh('echo "$GREETING from $(id -un) (uid $(id -u)) in $PWD" > greeting.txt')
    .root()
)
result = llb.scratch().file(llb.copy(greeting, "/tmp/greeting.txt", "/greeting.txt"))
result.marshal().write(sys.stdout.buffer)
"""


# --- git_source: a repository served by `git daemon` on loopback ---------------------------


def source_schemes() -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "bkcore", "plugins", "--format", "json"],
        capture_output=True,
        check=True,
    )
    plugins = json.loads(proc.stdout)["plugins"]
    return {e["key"] for p in plugins for e in p["registered"].get("sources", [])}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A repository with a README and two files, served read-only on 127.0.0.1."""
    if shutil.which("git") is None:  # pragma: no cover - depends on the machine
        pytest.skip("git is not installed")
    files = {"README.md": b"# example\n", "src/a.txt": b"alpha\n", "src/b.txt": b"beta!\n"}
    work = tmp_path / "work"
    for rel, content in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(content)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "init"], check=True)
    repos = tmp_path / "repos"
    repos.mkdir()
    bare = repos / "example.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    port = free_port()
    url = f"git://127.0.0.1:{port}/example.git"
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            "--reuseaddr",
            f"--base-path={repos}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(repos),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(
            ["git", "ls-remote", url], capture_output=True, check=False
        ).returncode:
            assert daemon.poll() is None, "git daemon exited"
            assert time.monotonic() < deadline, "git daemon did not come up"
            time.sleep(0.1)
        yield url, files
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_git_source_reports_on_the_checkout(
    bkcli: Any, rootfs: Path, store: Path, tmp_path: Path, git_daemon: tuple[str, dict[str, bytes]]
) -> None:
    url, files = git_daemon
    data = example_llb("git_source", BKCORE_GIT_REPO=url, BKCORE_GIT_REF="main")
    out = tmp_path / "out"
    bkcore_build(bkcli, data, store, out, {"base": rootfs})
    assert tree_of(out) == {"report.txt", "README.md"}
    assert (out / "README.md").read_bytes() == files["README.md"]
    assert (out / "report.txt").read_text().splitlines() == [
        f"repository: {url}",
        "ref: main",
        f"files: {len(files)}",
        "directories: 2",
        f"bytes: {sum(len(c) for c in files.values())}",
    ]
