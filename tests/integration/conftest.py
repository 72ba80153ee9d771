"""Shared fixtures of the integration tests.

``bk`` is a :class:`Builder`: it marshals an SDK graph (``bkcore.llb``), pipes it into a real
``bkcore build`` subprocess (own state root per test, runc containers, ``--progress rawjson``)
and returns a :class:`BuildRun` with the parsed progress. ``bk.base()`` is a busybox-static
rootfs made by ``scripts/make-rootfs`` once per session and sent as the local source
``rootfs``.

Build modes (issue 6): ``bk`` and ``bkcli`` are parametrized ``[embedded]``/``[daemon]``. In
daemon mode each state root gets its own ``bkcore --root ROOT daemon --addr unix://SOCK``
(started on first use, one per test: a daemon starts in ~0.5 s, and a fresh root per test keeps
cache assertions independent) and the client argv says ``--addr`` instead of ``--root``. At
teardown every daemon is stopped with SIGTERM and must exit 0 leaving no runc container and
no mount under its root. ``bk.cli(root)`` / ``bkcli(root, plugins=..., env=...)`` give the
``python -m bkcore --root|--addr ...`` prefix of any other command (``du``, ``prune``, a
Dockerfile build). Settings the engine reads from its environment (``DAEMON_ENV``: registry
configuration, CA files, ``PYTHONPATH`` of test plugins) are given to the daemon; a build whose
env changes them restarts that root's daemon.

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
#: The two ways every build test runs: an embedded engine, or a daemon started here.
BUILD_MODES = ("embedded", "daemon")
#: Environment the engine (not the client) reads: in daemon mode the daemon gets these.
DAEMON_ENV = ("BKCORE_REGISTRY_CONFIG", "SSL_CERT_FILE", "SSL_CERT_DIR", "PYTHONPATH")
#: Upper bound for a daemon to start listening or to stop after SIGTERM.
DAEMON_TIMEOUT = 60.0


def build_requirements() -> str:
    """Why end-to-end builds cannot run here, or "" when they can."""
    if os.geteuid() != 0:
        return "runc containers need root"
    if shutil.which("runc") is None:
        return "runc binary not installed"
    if not os.path.exists(BUSYBOX):
        return "busybox-static (/bin/busybox) not installed"
    return ""


def client_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a client process: ours plus ``env``, never a stray BKCORE_HOST."""
    merged = {**os.environ, **(env or {})}
    merged.pop("BKCORE_HOST", None)
    return merged


def runc_containers(root: Path) -> list[str]:
    """Containers runc knows under a state root (every ``runc`` state dir beside ``bundles``)."""
    found: list[str] = []
    if not root.exists():
        return found
    for state in root.rglob("runc"):
        if state.is_dir() and (state.parent / "bundles").is_dir():
            proc = subprocess.run(
                ["runc", "--root", str(state), "list", "-q"],
                capture_output=True,
                text=True,
                check=False,
            )
            found += proc.stdout.split()
    return found


def mounts_below(root: Path) -> list[str]:
    """Mount points at or below ``root`` (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    out = []
    for line in lines:
        point = line.split()[4]
        if point == prefix or point.startswith(prefix + "/"):
            out.append(point)
    return out


class Daemon:
    """One ``bkcore --root ROOT daemon --addr unix://SOCK`` subprocess."""

    def __init__(
        self,
        root: Path,
        *,
        plugins: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        import tempfile

        self.root = root
        self.plugins = tuple(plugins)
        self.env = dict(env or {})
        self.args = tuple(args)
        # a short directory: a unix socket path must fit in 108 bytes
        self.sock_dir = Path(tempfile.mkdtemp(prefix="bkd-", dir="/tmp"))
        self.address = f"unix://{self.sock_dir}/bk.sock"
        self.log = self.sock_dir / "daemon.log"
        argv = [sys.executable, "-m", "bkcore", "--root", str(root)]
        for plugin in self.plugins:
            argv += ["--plugin", plugin]
        argv += ["daemon", "--addr", self.address, *self.args]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=client_env(self.env),
                start_new_session=True,
            )
        deadline = time.monotonic() + DAEMON_TIMEOUT
        while b"listening on" not in self.log.read_bytes():
            if self.proc.poll() is not None:
                text = self.log_text()
                shutil.rmtree(self.sock_dir, ignore_errors=True)
                raise AssertionError(f"daemon exited ({self.proc.returncode}): {text}")
            if time.monotonic() > deadline:
                self._kill()
                raise AssertionError(f"daemon did not start: {self.log_text()}")
            time.sleep(0.02)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def stop(self) -> list[str]:
        """SIGTERM the daemon; return what is wrong (exit status, leftovers), empty if clean."""
        problems: list[str] = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(DAEMON_TIMEOUT)
        except subprocess.TimeoutExpired:
            problems.append(f"daemon on {self.root} ignored SIGTERM for {DAEMON_TIMEOUT} s")
            code = None
        log = self.log_text()
        if code is None:
            self._kill()
        else:
            shutil.rmtree(self.sock_dir, ignore_errors=True)
        if code not in (0, None):
            problems.append(f"daemon on {self.root} exited {code}: {log}")
        left = runc_containers(self.root)
        if left:
            problems.append(f"daemon on {self.root} left runc containers {left}")
        mounted = mounts_below(self.root)
        if mounted:
            problems.append(f"daemon on {self.root} left mounts {mounted}")
        return problems


class Engines:
    """Where the ``bkcore`` commands of one test go: ``--root ROOT`` (embedded) or the
    ``--addr`` of a daemon on ROOT, started on first use (daemon mode)."""

    def __init__(self, mode: str) -> None:
        assert mode in BUILD_MODES, mode
        self.mode = mode
        self.daemons: dict[Path, Daemon] = {}

    @property
    def daemon_mode(self) -> bool:
        return self.mode == "daemon"

    def daemon(
        self,
        root: Path,
        *,
        plugins: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        daemon_args: Sequence[str] = (),
    ) -> Daemon:
        """The daemon serving ``root`` with these plugins, engine settings and ``bkcore
        daemon`` options (a running one with others is stopped first; the root is kept)."""
        wanted = {k: v for k, v in client_env(env).items() if k in DAEMON_ENV}
        have = {k: v for k, v in os.environ.items() if k in DAEMON_ENV}
        settings = {k: v for k, v in wanted.items() if have.get(k) != v}
        running = self.daemons.get(root)
        if running is not None:
            same = (tuple(plugins), settings, tuple(daemon_args))
            if (running.plugins, running.env, running.args) == same:
                if running.proc.poll() is None:
                    return running
            self.daemons.pop(root)
            problems = running.stop()
            assert not problems, "\n".join(problems)
        started = Daemon(root, plugins=plugins, env=settings, args=daemon_args)
        self.daemons[root] = started
        return started

    def prefix(
        self,
        root: Path,
        *,
        plugins: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        daemon_args: Sequence[str] = (),
    ) -> list[str]:
        """``python -m bkcore`` and the option choosing the engine (and ``--plugin``s);
        ``daemon_args`` are options of ``bkcore daemon`` (used in daemon mode only)."""
        argv = [sys.executable, "-m", "bkcore"]
        if self.daemon_mode:
            daemon = self.daemon(root, plugins=plugins, env=env, daemon_args=daemon_args)
            argv += ["--addr", daemon.address]
        else:
            argv += ["--root", str(root)]
        for plugin in plugins:
            argv += ["--plugin", plugin]
        return argv

    __call__ = prefix

    def close(self) -> list[str]:
        """Stop every daemon; what went wrong (empty when all exited cleanly)."""
        problems: list[str] = []
        while self.daemons:
            _, daemon = self.daemons.popitem()
            problems += daemon.stop()
        return problems


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
    """Runs ``bkcore build`` subprocesses on one state root (``self.root``), embedded or
    through a daemon on that root (``self.mode``)."""

    def __init__(self, root: Path, rootfs: Path, tmp: Path, engines: Engines | None = None) -> None:
        self.root = root
        self.rootfs_dir = rootfs
        self.tmp = tmp
        self.engines = engines or Engines("embedded")
        self._started: list[subprocess.Popen[bytes]] = []

    @property
    def mode(self) -> str:
        """``embedded`` or ``daemon``."""
        return self.engines.mode

    def cli(self, root: Path | None = None, env: Mapping[str, str] | None = None) -> list[str]:
        """``python -m bkcore --root ROOT`` or ``... --addr`` of ROOT's daemon."""
        return self.engines.prefix(root or self.root, env=env)

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
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        argv = [*self.cli(root, env=env), "build", "--progress", progress]
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
        argv = self.argv(env=env, **options)
        proc = subprocess.run(
            argv,
            input=self.definition(graph),
            capture_output=True,
            env=client_env(env),
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
                env=client_env(),
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

    def close(self) -> list[str]:
        """Kill background builds, stop the daemons; the problems found (empty if clean)."""
        self.kill_leftovers()
        return self.engines.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using ``build_mode`` (through ``bk`` or ``bkcli``) runs ``[embedded]`` and
    ``[daemon]``; ``@pytest.mark.embedded_only("why")`` keeps one to ``[embedded]``."""
    if "build_mode" not in metafunc.fixturenames:
        return
    modes = BUILD_MODES
    marker = metafunc.definition.get_closest_marker("embedded_only")
    if marker is not None:
        assert marker.args and str(marker.args[0]).strip(), "embedded_only needs its reason"
        modes = ("embedded",)
    metafunc.parametrize("build_mode", modes, indirect=True)


@pytest.fixture
def build_mode(request: pytest.FixtureRequest) -> str:
    """``embedded`` or ``daemon`` (parametrized by :func:`pytest_generate_tests`)."""
    mode: str = request.param
    return mode


@pytest.fixture
def bkcli(build_mode: str) -> Iterator[Engines]:
    """``bkcli(root, plugins=(), env=None, daemon_args=())`` -> the ``python -m bkcore
    --root|--addr ...`` prefix of a command on state root ``root`` (``daemon_args``: options
    of ``bkcore daemon``); daemons are stopped and checked at teardown."""
    engines = Engines(build_mode)
    try:
        yield engines
    finally:
        problems = engines.close()
    assert not problems, "\n".join(problems)


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
def bk(busybox_rootfs: Path, tmp_path: Path, build_mode: str) -> Iterator[Builder]:
    """A :class:`Builder` on a fresh state root under ``tmp_path``, in both build modes."""
    work = tmp_path / "work"
    work.mkdir()
    builder = Builder(tmp_path / "state", busybox_rootfs, work, Engines(build_mode))
    try:
        yield builder
    finally:
        problems = builder.close()
    assert not problems, "\n".join(problems)


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
