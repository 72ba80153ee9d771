"""Many ``bkcore --addr ... build`` clients against one ``bkcore daemon`` subprocess (issue 6,
load acceptance): overlapping raw LLB graphs whose shared step runs once, every client gets
its own correct output, and afterwards nothing is left behind (runc containers, mounts under
the daemon's root, in-use records, client connections); a client killed with SIGKILL during
a RUN has its build cancelled while the others finish, and the daemon keeps serving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb
from bkcore.llb.execop import CacheSharing

pytestmark = pytest.mark.integration

START_TIMEOUT = 60.0
CLIENTS = 16


class Daemon:
    def __init__(self, root: Path, address: str, proc: subprocess.Popen[bytes], log: Path):
        self.root = root
        self.address = address
        self.proc = proc
        self.log = log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    root = tmp_path / "daemon-root"
    address = f"unix://{tmp_path}/bk.sock"
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bkcore", "--root", str(root), "daemon", "--addr", address],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    d = Daemon(root, address, proc, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while b"listening on" not in log.read_bytes():
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited ({proc.returncode}): {log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon did not start: {log.read_text()}")
            time.sleep(0.05)
        yield d
    finally:
        d.stop()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "BKCORE_HOST"}


def start_build(d: Daemon, definition: bytes, dest: Path, err: Path) -> subprocess.Popen[bytes]:
    with open(err, "wb") as errf:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bkcore",
                "--addr",
                d.address,
                "build",
                "--progress",
                "plain",
                "--output",
                f"type=local,dest={dest}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errf,
            env=_env(),
        )
    assert proc.stdin is not None
    proc.stdin.write(definition)
    proc.stdin.close()
    return proc


def build(d: Daemon, definition: bytes, dest: Path, err: Path) -> None:
    proc = start_build(d, definition, dest, err)
    assert proc.wait(300) == 0, err.read_text()


def base_state(ref: str, pause: str = "1") -> llb.State:
    """The shared step: counts its runs in a cache mount (locked: runs are serialised), and
    records the count it saw; ``sleep PAUSE`` keeps it running for a while."""
    return llb.image(ref).run(
        [
            "/bin/sh",
            "-c",
            "n=$(cat /counter/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /counter/n; "
            f"sleep {pause}; echo base-run-$n > /base.txt",
        ],
        mounts=[llb.cache("/counter", "d6load-counter", sharing=CacheSharing.LOCKED)],
    )


def client_definition(base: llb.State, i: int, extra: str = "") -> bytes:
    mine = base.sh(f"{extra}echo client-{i} > /mine.txt; cat /base.txt >> /mine.txt")
    out = llb.scratch().file(llb.copy(mine, "/mine.txt", "/mine.txt"))
    out = out.file(llb.copy(base, "/base.txt", "/base.txt"))
    data: bytes = out.marshal().to_bytes()
    return data


def counter_definition(ref: str) -> bytes:
    """Reads the shared step's run counter (a graph no client built: it runs now)."""
    read = llb.image(ref).sh(
        "cat /counter/n > /count.txt",
        mounts=[llb.cache("/counter", "d6load-counter", sharing=CacheSharing.LOCKED)],
    )
    data: bytes = (
        llb.scratch().file(llb.copy(read, "/count.txt", "/count.txt")).marshal().to_bytes()
    )
    return data


def runc_roots(d: Daemon) -> list[Path]:
    roots = [p for p in d.root.rglob("runc") if p.is_dir() and (p.parent / "bundles").exists()]
    assert roots, f"no runc state root under {d.root}"
    return roots


def containers(d: Daemon) -> list[str]:
    out: list[str] = []
    for root in runc_roots(d):
        got = subprocess.run(
            ["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True, check=True
        )
        out += got.stdout.split()
    return out


def mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line for line in lines if prefix in line.split()[4]]


def in_use(d: Daemon) -> list[dict[str, Any]]:
    got = subprocess.run(
        [sys.executable, "-m", "bkcore", "--addr", d.address, "du", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        env=_env(),
    )
    assert got.returncode == 0, got.stderr
    records: list[dict[str, Any]] = json.loads(got.stdout)
    assert records, "du shows no records after builds"
    return [r for r in records if r["in_use"]]


def daemon_sockets(d: Daemon) -> int:
    fd_dir = Path(f"/proc/{d.proc.pid}/fd")
    count = 0
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except FileNotFoundError:
            continue
    return count


def wait_until(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is True:
            return
        assert time.monotonic() < deadline, f"{what}: {result}"
        time.sleep(0.2)


def assert_clean(d: Daemon, sockets_before: int) -> None:
    wait_until("runc containers left", lambda: containers(d) == [] or containers(d))
    assert mounts_under(d.root) == []
    wait_until("records in use", lambda: in_use(d) == [] or in_use(d), timeout=10)
    wait_until(
        "daemon sockets left open",
        lambda: daemon_sockets(d) <= sockets_before or daemon_sockets(d),
    )


def test_sixteen_clients_share_one_run_of_the_base_step(
    daemon: Daemon, tmp_path: Path, registry: Any, images: Any
) -> None:
    ref = images.push(registry, "d6load/busybox:latest", images.busybox_image())
    base = base_state(ref)
    # a warm-up build pulls the image (so the clients overlap on the base step, not the pull)
    build(
        daemon,
        llb.image(ref).sh("echo warm > /w").marshal().to_bytes(),
        tmp_path / "warm",
        tmp_path / "warm.err",
    )
    sockets_before = daemon_sockets(daemon)

    procs = [
        start_build(
            daemon,
            client_definition(base, i),
            tmp_path / f"out-{i}",
            tmp_path / f"client-{i}.err",
        )
        for i in range(CLIENTS)
    ]
    codes = [p.wait(300) for p in procs]
    for i, code in enumerate(codes):
        assert code == 0, (tmp_path / f"client-{i}.err").read_text()
    for i in range(CLIENTS):
        out = tmp_path / f"out-{i}"
        assert (out / "mine.txt").read_text() == f"client-{i}\nbase-run-1\n"
        assert (out / "base.txt").read_text() == "base-run-1\n"
    build(daemon, counter_definition(ref), tmp_path / "count", tmp_path / "count.err")
    assert (tmp_path / "count" / "count.txt").read_text() == "1\n"  # the shared step ran once

    assert_clean(daemon, sockets_before)
    assert daemon.proc.poll() is None


def ps_args() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


def sleep_pids(args: str) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return {int(line.split()[0]) for line in out.stdout.splitlines() if line.endswith(args)}


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_client_killed_mid_run_is_cancelled_and_the_others_finish(
    daemon: Daemon, tmp_path: Path, registry: Any, images: Any
) -> None:
    """SIGKILL of a client (1) while the step it shares with four others runs: that step goes
    on for them and still runs once; (2) while its own RUN runs: that container is gone
    within seconds while two others finish. Then the daemon serves a new build, and nothing
    is left behind."""
    ref = images.push(registry, "d6load/busybox:latest", images.busybox_image())
    base = base_state(ref, pause="8.125")
    build(
        daemon,
        llb.image(ref).sh("echo warm > /w").marshal().to_bytes(),
        tmp_path / "warm",
        tmp_path / "warm.err",
    )
    sockets_before = daemon_sockets(daemon)

    # (1) killed while the shared step runs for it and four other clients
    errs = [tmp_path / f"shared-{i}.err" for i in range(5)]
    clients = [
        start_build(daemon, client_definition(base, i), tmp_path / f"shared-out-{i}", errs[i])
        for i in range(5)
    ]
    victim, others = clients[0], clients[1:]
    try:
        wait_until(
            "not every client reached the shared step",
            lambda: (
                (
                    all(b"sleep 8.125; echo base-run" in e.read_bytes() for e in errs)
                    and bool(sleep_pids("sleep 8.125"))
                )
                or [p.poll() for p in clients]
            ),
            timeout=120,
        )
        before = sleep_pids("sleep 8.125")
        assert before, "the shared step ended before the kill (too slow)"
        kill(victim)
        # the shared step goes on in the same process (not cancelled, not restarted)
        while now := sleep_pids("sleep 8.125"):
            assert now == before, f"the shared step restarted: {before} -> {now}"
            time.sleep(0.1)
    finally:
        if victim.poll() is None:
            kill(victim)
    for i, proc in enumerate(others, start=1):
        assert proc.wait(300) == 0, errs[i].read_text()
        got = (tmp_path / f"shared-out-{i}" / "mine.txt").read_text()
        assert got == f"client-{i}\nbase-run-1\n"
    assert not (tmp_path / "shared-out-0").exists()

    # (2) killed in its own RUN while two others build on the (now cached) shared step
    victim_err = tmp_path / "victim.err"
    victim = start_build(
        daemon,
        client_definition(base, 99, extra="echo victim-started; sleep 29.25; "),
        tmp_path / "victim-out",
        victim_err,
    )
    others = [
        start_build(
            daemon,
            client_definition(base, i, extra="sleep 1; "),
            tmp_path / f"out-{i}",
            tmp_path / f"client-{i}.err",
        )
        for i in range(2)
    ]
    try:
        wait_until(
            "the victim's RUN did not start",
            lambda: b"victim-started" in victim_err.read_bytes() or victim.poll(),
            timeout=120,
        )
        kill(victim)
    finally:
        if victim.poll() is None:
            kill(victim)
    wait_until(
        "cancel",
        lambda: "sleep 29.25" not in ps_args() or "the killed client's RUN still runs",
        timeout=15,
    )
    for i, proc in enumerate(others):
        assert proc.wait(300) == 0, (tmp_path / f"client-{i}.err").read_text()
        assert (tmp_path / f"out-{i}" / "mine.txt").read_text() == f"client-{i}\nbase-run-1\n"
    assert not (tmp_path / "victim-out").exists()

    # the daemon serves a new build; the shared step ran once; nothing is left behind
    build(daemon, counter_definition(ref), tmp_path / "count", tmp_path / "count.err")
    assert (tmp_path / "count" / "count.txt").read_text() == "1\n"
    assert_clean(daemon, sockets_before)
    assert daemon.proc.poll() is None


def test_a_solve_whose_session_closes_is_cancelled(
    daemon: Daemon, tmp_path: Path, registry: Any, images: Any
) -> None:
    """The client ends its Control.Session while its Solve (on the same, still open
    connection) is in a RUN: the daemon cancels that build (the container goes, the Solve
    fails naming the closed session) instead of running it to the end; the connection then
    serves another Solve."""
    import asyncio

    from bkcore.api.client import Client
    from bkcore.api.pb import control as cpb
    from bkcore.errors import BkError
    from bkcore.llb import pb
    from bkcore.llb.digest import present
    from bkcore.session.grpc_transport import attach_session
    from bkcore.session.session import Session

    ref = images.push(registry, "d6load/busybox:latest", images.busybox_image())
    long_run = llb.image(ref).sh("echo started; sleep 28.75").marshal().to_bytes()
    quick = llb.scratch().file(llb.mkfile("/ok", 0o644, b"ok")).marshal().to_bytes()

    def running() -> bool:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
        return "sleep 28.75" in ps.stdout

    async def go() -> tuple[BaseException | None, float, bool, cpb.SolveResponse]:
        session = Session(name="d6load", shared_key="d6load")
        async with Client(daemon.address) as client:
            async with attach_session(client.channel(), session):
                solve = asyncio.ensure_future(
                    client.solve(
                        cpb.SolveRequest(
                            ref="d6load-long",
                            definition=pb.Definition().parse(long_run),
                            session=session.id,
                            cache=present(cpb.CacheOptions()),
                        )
                    )
                )
                deadline = time.monotonic() + 120
                while not await asyncio.to_thread(running):
                    assert not solve.done(), solve.result()
                    assert time.monotonic() < deadline, "the RUN did not start"
                    await asyncio.sleep(0.1)
            # the session is closed (the daemon ended its side); the Solve's stream is open
            closed_at = time.monotonic()
            error: BaseException | None = None
            try:
                await asyncio.wait_for(solve, 20)
            except BkError as exc:
                error = exc
            except TimeoutError:
                solve.cancel()  # still building 20 s after its session closed
            took = time.monotonic() - closed_at
            still = await asyncio.to_thread(running)
            again = await client.solve(
                cpb.SolveRequest(
                    ref="d6load-quick",
                    definition=pb.Definition().parse(quick),
                    cache=present(cpb.CacheOptions()),
                )
            )
        return error, took, still, again

    error, took, still, again = asyncio.run(asyncio.wait_for(go(), 180))
    assert error is not None, f"the Solve succeeded after its session closed ({took:.1f} s)"
    assert "session" in str(error) and "closed" in str(error), str(error)
    assert not still, "the cancelled build's RUN still runs"
    assert again is not None
    wait_until("runc containers left", lambda: containers(daemon) == [] or containers(daemon))
    assert mounts_under(daemon.root) == []
    assert in_use(daemon) == []
