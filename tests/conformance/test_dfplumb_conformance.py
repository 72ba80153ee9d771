"""The Dockerfile conformance cases (recorded from BuildKit v0.11.6) run through bkcore.

One pytest test per case directory under ``cases/``: a session fixture runs this directory's
``run.py`` harness (a copy of the shared one, unchanged) once over the selected cases with
``--builder bkcore`` in strict mode (per-layer lists included; ``--jobs`` from
``BKCORE_CONFORMANCE_JOBS``, default 4), and each test passes or fails with that case's line
and differences from the harness's report. bkcore is called exactly as the harness calls it:
``bkcore build --frontend dockerfile.v0 --local context=... --local dockerfile=...
--output type=local|oci ...``.

Every case runs twice (issue 6): ``[embedded-NNN...]`` with ``bkcore --root ROOT`` and
``[daemon-NNN...]`` with ``bkcore --addr`` of a ``bkcore daemon`` started for the session on
its own root (stopped with SIGTERM at the end: it must exit 0 leaving no container or mount).

The cases name ``127.0.0.1:5000/testbase:latest`` literally, so the registry must answer on
port 5000: the ``testbase_registry`` fixture starts Debian's docker-registry there when the
port is free; when a registry already answers there it is used as is. Either way
``make_base.py`` pushes the base image (idempotent) and its manifest digest must be the one
the README names. Something else on port 5000 fails every case with a clear message.

Data notes: ``cases/003-copy-symlink-sources`` holds real symlinks here (in the shared copy
they were stored as regular files holding the link target: ``dirlink -> tree``,
``link-abs -> /real.txt``, ``link-rel -> real.txt``, ``tree/dangling -> missing-target``,
``tree/ln -> leaf.txt``, ``tree/up -> ../real.txt``, as the case's name and its expected
json say).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
CASES = sorted(p.name for p in (HERE / "cases").iterdir() if p.is_dir())
REGISTRY_HOST = "127.0.0.1"
REGISTRY_PORT = 5000
REGISTRY = f"{REGISTRY_HOST}:{REGISTRY_PORT}"
#: The whole run.py run (its own timeout is per build, 120 s).
RUN_TIMEOUT = 3600
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def expected_base_digest() -> str:
    """The testbase manifest digest the README names (the expectations hold only for it)."""
    text = (HERE / "README.md").read_text()
    found = re.search(r"`(sha256:[0-9a-f]{64})`", text)
    assert found, "README.md names no testbase digest"
    return found.group(1)


def _requirements() -> str:
    if os.geteuid() != 0:
        return "the conformance cases run as root (runc containers, recorded uid/gid 0)"
    for binary in ("runc", "docker-registry", "skopeo"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed"
    if not os.path.exists("/bin/busybox"):
        return "busybox-static (/bin/busybox) is not installed"
    return ""


def _port_open() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((REGISTRY_HOST, REGISTRY_PORT)) == 0


def _is_registry() -> bool:
    try:
        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5).close()
        return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


def _manifest_digest() -> str:
    req = urllib.request.Request(
        f"http://{REGISTRY}/v2/testbase/manifests/latest",
        method="HEAD",
        headers={"Accept": MANIFEST_TYPES},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(resp.headers.get("Docker-Content-Digest", ""))


def _start_registry(base: Path) -> subprocess.Popen[bytes]:
    storage = base / "storage"
    storage.mkdir(parents=True)
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: {REGISTRY}\n"
    )
    log = base / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(shutil.which("docker-registry")), "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while not _is_registry():
        if proc.poll() is not None:
            pytest.fail(f"docker-registry on {REGISTRY} exited: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"docker-registry on {REGISTRY} did not answer within 30 s")
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="session")
def testbase_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry on 127.0.0.1:5000 holding testbase with the README's digest."""
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    proc: subprocess.Popen[bytes] | None = None
    if _port_open():
        if not _is_registry():
            pytest.fail(
                f"port {REGISTRY} is taken by something that is not a registry; the "
                "conformance cases need a plain-HTTP registry there (they name it literally)"
            )
    else:
        proc = _start_registry(tmp_path_factory.mktemp("registry5000"))
    try:
        push = subprocess.run(
            [sys.executable, str(HERE / "make_base.py"), "--registry", REGISTRY],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert push.returncode == 0, f"make_base.py failed:\n{push.stdout}\n{push.stderr}"
        digest = _manifest_digest()
        assert digest == expected_base_digest(), (
            f"testbase on {REGISTRY} has digest {digest}, the expectations need "
            f"{expected_base_digest()} (a different busybox-static build?)"
        )
        yield REGISTRY
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _start_daemon(root: Path) -> tuple[subprocess.Popen[bytes], Path, str]:
    """``bkcore --root ROOT daemon`` on a socket in a short new directory (a unix socket
    path must fit in 108 bytes); returns the process, that directory and the address."""
    sock_dir = Path(tempfile.mkdtemp(prefix="bkd-", dir="/tmp"))
    address = f"unix://{sock_dir}/bk.sock"
    log = sock_dir / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bkcore", "--root", str(root), "daemon", "--addr", address],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while b"listening on" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            text = log.read_text(errors="replace")[-3000:]
            shutil.rmtree(sock_dir, ignore_errors=True)
            pytest.fail(f"bkcore daemon did not start ({proc.returncode}): {text}")
        time.sleep(0.02)
    return proc, sock_dir, address


def _mounts_below(root: Path) -> list[str]:
    prefix = str(root.resolve())
    points = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


@pytest.fixture(scope="session", params=["embedded", "daemon"])
def bkcore_command(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The BKCORE command run.py calls: this interpreter's bkcore on one state root, embedded
    (``--root``) or through a ``bkcore daemon`` on that root (``--addr``), which must exit 0
    on SIGTERM afterwards leaving no runc container and no mount under its root."""
    root = tmp_path_factory.mktemp(f"bkcore-conformance-{request.param}")
    if request.param == "embedded":
        yield f"{sys.executable} -m bkcore --root {root}"
        return
    proc, sock_dir, address = _start_daemon(root)
    try:
        yield f"{sys.executable} -m bkcore --addr {address}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        log = (sock_dir / "daemon.log").read_text(errors="replace")[-3000:]
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert code == 0, f"bkcore daemon exited {code}: {log}"
    runc_state = root / "runc" / "runc"
    if runc_state.is_dir():
        listed = subprocess.run(
            ["runc", "--root", str(runc_state), "list", "-q"], capture_output=True, text=True
        )
        assert listed.stdout.split() == [], f"runc containers left: {listed.stdout}"
    assert _mounts_below(root) == []


def test_cases_are_present() -> None:
    assert len(CASES) == 60
    link = HERE / "cases" / "003-copy-symlink-sources" / "link-rel"
    assert link.is_symlink() and os.readlink(link) == "real.txt"


def _parse_report(output: str) -> dict[str, tuple[str, str]]:
    """run.py's report -> {case: (PASS|FAIL, its line and the indented detail under it)}."""
    results: dict[str, tuple[str, str]] = {}
    current: str | None = None
    for line in output.splitlines():
        found = re.match(r"^(PASS|FAIL) (\S+) ", line)
        if found:
            current = found.group(2)
            results[current] = (found.group(1), line)
        elif current is not None and line.startswith("    "):
            status, text = results[current]
            results[current] = (status, text + "\n" + line)
        else:
            current = None
    return results


@pytest.fixture(scope="session")
def conformance_results(
    request: pytest.FixtureRequest,
    testbase_registry: str,
    bkcore_command: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, tuple[str, str]], str]:
    """One run.py run (strict, ``--jobs``) over every case selected in this session."""
    selected: set[str] = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "case" not in callspec.params:
            continue
        if Path(str(item.path)).resolve() == Path(__file__).resolve():
            selected.add(str(callspec.params["case"]))
    numbers = ",".join(case.split("-", 1)[0] for case in sorted(selected) or CASES)
    out = tmp_path_factory.mktemp("conformance-out")
    env = {**os.environ, "BKCORE": bkcore_command, "REGISTRY": testbase_registry}
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "run.py"),
            "--builder",
            "bkcore",
            "--cases",
            numbers,
            "--jobs",
            os.environ.get("BKCORE_CONFORMANCE_JOBS", "4"),
            "-v",
            "--keep",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=RUN_TIMEOUT,
        check=False,
        cwd=HERE,
    )
    output = proc.stdout + proc.stderr
    return _parse_report(output), output


@pytest.mark.parametrize("case", CASES)
def test_case(case: str, conformance_results: tuple[dict[str, tuple[str, str]], str]) -> None:
    results, output = conformance_results
    assert case in results, f"run.py reported nothing for {case}:\n{output[-4000:]}"
    status, detail = results[case]
    assert status == "PASS", detail
