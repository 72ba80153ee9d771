"""Shared fixtures of the integration tests.

``bk`` is a :class:`Builder`: it marshals an SDK graph (``bkcore.llb``), pipes it into a real
``bkcore build`` subprocess (own state root per test, runc containers, ``--progress rawjson``)
and returns a :class:`BuildRun` with the parsed progress. ``bk.base()`` is a busybox-static
rootfs made by ``scripts/make-rootfs`` once per session and sent as the local source
``rootfs``.

Servers and images (helpers in ``imagefixtures.py``, importable as ``imagefixtures`` once this
conftest is loaded): ``registry`` (Debian's docker-registry on a free loopback port),
``auth_registry`` (htpasswd basic auth), ``token_registry`` (``auth: token:`` behind a token
server run here), ``vector_registry`` (port 5000, the name the golden vectors use),
``start_registry`` (any of those by hand), ``images`` (deterministic busybox-static images and
multi-platform indexes, pushed to any of them), ``git_server`` (bare repositories over
``git daemon`` and ``file://``) and ``http_server`` (files with ETags).

With ``--import-mode=importlib`` test modules cannot import each other: shared code lives here
and in ``imagefixtures.py``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "data" / "vectors"
MAKE_ROOTFS = REPO / "scripts" / "make-rootfs"
BUSYBOX = "/bin/busybox"
#: Name of the local source carrying the busybox rootfs in every graph of these tests.
ROOTFS_LOCAL = "rootfs"
#: Upper bound for one ``bkcore build`` in these tests (a hang fails instead of blocking).
BUILD_TIMEOUT = 180.0


def build_requirements() -> str:
    """Why end-to-end builds cannot run here, or "" when they can."""
    if os.geteuid() != 0:
        return "runc containers need root"
    if shutil.which("runc") is None:
        return "runc binary not installed"
    if not os.path.exists(BUSYBOX):
        return "busybox-static (/bin/busybox) not installed"
    return ""


@dataclass
class BuildRun:
    """One finished ``bkcore build``: exit status, stdout bytes, rawjson progress on stderr."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def parse(cls, argv: list[str], code: int, stdout: bytes, stderr: str) -> BuildRun:
        events = []
        for line in stderr.splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return cls(argv, code, stdout, stderr, events)

    def vertices(self) -> dict[str, dict[str, Any]]:
        """The last snapshot of every vertex, by digest (rawjson repeats full snapshots)."""
        out: dict[str, dict[str, Any]] = {}
        for event in self.events:
            for vertex in event.get("vertexes", []):
                out[vertex["digest"]] = vertex
        return out

    def by_name(self) -> dict[str, dict[str, Any]]:
        """The last snapshot of every vertex, by name (names must be unique in the graph)."""
        out: dict[str, dict[str, Any]] = {}
        for vertex in self.vertices().values():
            assert vertex["name"] not in out, f"two vertices named {vertex['name']!r}"
            out[vertex["name"]] = vertex
        return out

    def cached(self) -> dict[str, bool]:
        """Vertex name -> whether it was a cache hit (exporters are never cached)."""
        return {n: bool(v.get("cached")) for n, v in self.by_name().items()}

    def started(self, name: str) -> int:
        """How many distinct start times vertex ``name`` showed (runs of its op)."""
        starts = set()
        for event in self.events:
            for vertex in event.get("vertexes", []):
                if vertex["name"] == name and vertex.get("started") and not vertex.get("cached"):
                    starts.add(vertex["started"])
        return len(starts)

    def logs(self, name: str | None = None) -> bytes:
        """Process output streamed as progress logs (of vertex ``name``, or of all)."""
        digests = {d for d, v in self.vertices().items() if name is None or v["name"] == name}
        chunks = []
        for event in self.events:
            for log in event.get("logs", []):
                if log["vertex"] in digests:
                    chunks.append(base64.b64decode(log.get("data", "")))
        return b"".join(chunks)

    def error_line(self) -> str:
        """The non-JSON lines the CLI wrote on stderr (the one-line error)."""
        return "\n".join(ln for ln in self.stderr.splitlines() if not ln.startswith("{"))

    def check(self) -> BuildRun:
        assert self.returncode == 0, f"{self.argv}\n{self.error_line()}"
        return self


class Builder:
    """Runs ``bkcore build`` subprocesses on one state root (``self.root``)."""

    def __init__(self, root: Path, rootfs: Path, tmp: Path) -> None:
        self.root = root
        self.rootfs_dir = rootfs
        self.tmp = tmp
        self._started: list[subprocess.Popen[bytes]] = []

    # -- graphs ---------------------------------------------------------------------------

    def local_rootfs(self) -> Any:
        """The busybox rootfs as sent: the local source ``rootfs`` itself."""
        from bkcore import llb

        return llb.local(ROOTFS_LOCAL, shared_key_hint=ROOTFS_LOCAL, custom_name="rootfs")

    def base(self) -> Any:
        """The busybox rootfs copied by a FileOp onto scratch.

        A local source's cache key is random per session (solver.md §2.3) and an exec keys
        its rootfs input by that key, not by content (as BuildKit). The copy is keyed by the
        content of the source, so steps built on it can be cache hits in later processes.
        """
        from bkcore import llb

        return llb.scratch().file(
            llb.copy(self.local_rootfs(), "/", "/", dir_contents_only=True),
            custom_name="copy rootfs",
        )

    @staticmethod
    def definition(graph: Any) -> bytes:
        """Definition bytes of an ``llb.State`` (or the bytes themselves)."""
        if isinstance(graph, bytes | bytearray):
            return bytes(graph)
        data: bytes = graph.marshal(local_unique_id="bkcoretestsuniqueid").to_bytes()
        return data

    # -- command lines --------------------------------------------------------------------

    def argv(
        self,
        *,
        locals: Mapping[str, str | Path] | None = None,
        out: Path | None = None,
        tar: Path | str | None = None,
        secrets: Sequence[str] = (),
        ssh: Sequence[str] = (),
        no_cache: bool = False,
        root: Path | None = None,
        progress: str = "rawjson",
    ) -> list[str]:
        argv = [sys.executable, "-m", "bkcore", "--root", str(root or self.root), "build"]
        argv += ["--progress", progress]
        all_locals = {ROOTFS_LOCAL: str(self.rootfs_dir), **(locals or {})}
        for name, path in all_locals.items():
            argv += ["--local", f"{name}={path}"]
        for secret in secrets:
            argv += ["--secret", secret]
        for agent in ssh:
            argv += ["--ssh", agent]
        if out is not None:
            argv += ["--output", f"type=local,dest={out}"]
        if tar is not None:
            argv += ["--output", f"type=tar,dest={tar}"]
        if no_cache:
            argv.append("--no-cache")
        return argv

    def build(
        self,
        graph: Any,
        *,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        **options: Any,
    ) -> BuildRun:
        """Build ``graph`` (an ``llb.State`` or Definition bytes); see :meth:`argv`."""
        argv = self.argv(**options)
        proc = subprocess.run(
            argv,
            input=self.definition(graph),
            capture_output=True,
            env={**os.environ, **(env or {})},
            timeout=BUILD_TIMEOUT,
            check=False,
            cwd=self.tmp,
        )
        err = proc.stderr.decode(errors="replace")
        run = BuildRun.parse(argv, proc.returncode, proc.stdout, err)
        return run.check() if check else run

    def start(self, graph: Any, **options: Any) -> subprocess.Popen[bytes]:
        """Start a build in the background (its own session, so signals reach only it)."""
        argv = self.argv(**options)
        self._started_count = getattr(self, "_started_count", 0) + 1
        definition = self.tmp / f"background-{self._started_count}.llb"
        definition.write_bytes(self.definition(graph))
        with open(definition, "rb") as stdin:
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.tmp,
                start_new_session=True,
            )
        self._started.append(proc)
        return proc

    def wait_for(self, path: Path, proc: subprocess.Popen[bytes]) -> None:
        """Block until ``path`` exists; fail if ``proc`` exits first or after a long timeout."""
        deadline = time.monotonic() + BUILD_TIMEOUT
        while not path.exists():
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise AssertionError(f"build exited ({proc.returncode}) before {path}: {err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} did not appear within {BUILD_TIMEOUT} s")
            time.sleep(0.02)

    def finish(self, proc: subprocess.Popen[bytes]) -> BuildRun:
        """Wait for a background build and parse what it printed."""
        out, err = proc.communicate(timeout=BUILD_TIMEOUT)
        return BuildRun.parse(
            list(map(str, proc.args)), proc.returncode, out, err.decode(errors="replace")
        )

    def kill_leftovers(self) -> None:
        """SIGKILL the process group of every background build still running."""
        for proc in self._started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.communicate(timeout=60)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox-static rootfs (scripts/make-rootfs), shared read-only by the session."""
    reason = build_requirements()
    if reason:
        pytest.skip(reason)
    dest = tmp_path_factory.mktemp("busybox") / "rootfs"
    proc = subprocess.run([str(MAKE_ROOTFS), str(dest)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return dest


@pytest.fixture
def bk(busybox_rootfs: Path, tmp_path: Path) -> Iterator[Builder]:
    """A :class:`Builder` on a fresh state root under ``tmp_path``."""
    work = tmp_path / "work"
    work.mkdir()
    builder = Builder(tmp_path / "state", busybox_rootfs, work)
    try:
        yield builder
    finally:
        builder.kill_leftovers()


# -- registries, test images, git daemon, HTTP server (helpers in imagefixtures.py) -----------
sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagefixtures as imf  # noqa: E402  (after the path is set; not a test module)

REGISTRY_BIN = imf.REGISTRY_BIN
RegistryServer = imf.RegistryServer
#: Vectors v2, v4 and v6 name ``127.0.0.1:5000/busybox:latest``.
VECTOR_REGISTRY_PORT = 5000


@pytest.fixture
def start_registry(tmp_path: Path) -> Iterator[Any]:
    """``start(name="", *, port=None, htpasswd=None, auth_yaml="") -> RegistryServer``;
    every registry started is stopped at teardown."""
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry binary not installed (apt-get install docker-registry)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        name: str = "",
        *,
        port: int | None = None,
        htpasswd: Path | None = None,
        auth_yaml: str = "",
    ) -> imf.RegistryServer:
        base = tmp_path / (name or f"registry-{len(procs)}")
        host = f"127.0.0.1:{port or imf.free_port()}"
        auth = (
            f"auth:\n  htpasswd:\n    realm: bk-test\n    path: {htpasswd}\n"
            if htpasswd
            else auth_yaml
        )
        proc, storage = imf.start_registry_process(base, host, auth)
        procs.append(proc)
        return imf.RegistryServer(host, storage)

    yield start
    for proc in procs:
        imf.stop(proc)


@pytest.fixture
def registry(start_registry: Any) -> imf.RegistryServer:
    """A plain docker-registry on a free loopback port."""
    server: imf.RegistryServer = start_registry("plain")
    return server


@pytest.fixture
def auth_registry(start_registry: Any, tmp_path: Path) -> imf.RegistryServer:
    """docker-registry with htpasswd basic auth; ``.credentials`` = (imf.USER, imf.PASSWORD)."""
    try:
        line = imf.htpasswd_line(imf.USER, imf.PASSWORD)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    path = tmp_path / "htpasswd"
    path.write_text(line + "\n")
    server: imf.RegistryServer = start_registry("basic", htpasswd=path)
    server.credentials = (imf.USER, imf.PASSWORD)
    return server


@pytest.fixture
def token_registry(start_registry: Any, tmp_path: Path) -> Iterator[imf.RegistryServer]:
    """docker-registry with ``auth: token:`` trusting the RS256 tokens of a token server
    run here (``.tokens``: realm, requests seen); ``.credentials`` get a token."""
    try:
        tokens = imf.TokenServer.create(tmp_path / "token-server")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        server: imf.RegistryServer = start_registry("token", auth_yaml=tokens.auth_yaml())
        server.credentials = (imf.USER, imf.PASSWORD)
        server.tokens = tokens
        yield server
    finally:
        tokens.close()


@pytest.fixture
def vector_registry(start_registry: Any) -> imf.RegistryServer:
    """A plain registry on 127.0.0.1:5000, where the golden vectors look for busybox.

    Started here when the port is free. A plain (no auth) registry already listening there is
    used as it is (``storage`` is then unknown): pushes of the deterministic fixture images
    are idempotent, and developers often keep one on 5000. Anything else on the port fails
    the test with the reason (CI machines are fresh; a skip would hide the vectors)."""
    port = VECTOR_REGISTRY_PORT
    host = f"127.0.0.1:{port}"
    if imf.port_free(port):
        server: imf.RegistryServer = start_registry("vectors", port=port)
        return server
    problem = imf.plain_registry_problem(host)
    if problem:
        pytest.fail(
            f"{host} is in use and {problem}: the golden vectors name {host}/busybox:latest, "
            "so the test registry must listen there (stop whatever holds the port)"
        )
    return imf.RegistryServer(host, Path("/nonexistent/registry-storage"))


@pytest.fixture
def images(tmp_path: Path) -> imf.Images:
    """Deterministic busybox-static images and indexes, pushed to any registry fixture."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static (/bin/busybox) not installed")
    return imf.Images(tmp_path / "images")


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[imf.GitServer]:
    """``git daemon`` on a free loopback port; ``git_server.repo(name, files)`` makes a
    served bare repository (``.url`` git://, ``.file_url`` file://) with helpers to
    commit, tag and add submodules."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    server = imf.GitServer.start(tmp_path / "git")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http_server() -> Iterator[imf.HTTPServer]:
    """A threaded loopback HTTP server of in-memory files with ETag/Last-Modified and 304s."""
    server = imf.HTTPServer.start()
    try:
        yield server
    finally:
        server.close()
