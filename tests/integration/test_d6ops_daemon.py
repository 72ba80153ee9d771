"""``bkcore daemon`` operations as a subprocess: GC at start-up by BuildKit's default policies
(``gckeepstorage``), GC after a build while another build runs (what it holds stays), several
``--addr`` sockets owned by ``--group``, and a bad config file refused in one line."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb
from bkcore.api.client import Client
from bkcore.api.pb import control as cpb
from bkcore.llb import pb

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


class Daemon:
    def __init__(self, root: Path, *args: str, addresses: int = 1) -> None:
        self.root = root
        self.dir = Path(tempfile.mkdtemp(prefix="bkops-", dir="/tmp"))
        self.addresses = [f"unix://{self.dir}/bk{i}.sock" for i in range(addresses)]
        self.log = self.dir / "daemon.log"
        argv = [sys.executable, "-m", "bkcore", "--root", str(root), "daemon"]
        for a in self.addresses:
            argv += ["--addr", a]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*argv, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + TIMEOUT
        while self.log.read_bytes().count(b"listening on") < addresses:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"daemon did not start: {self.log.read_text()}")
            time.sleep(0.05)
        self.address = self.addresses[0]

    def du(self) -> list[dict[str, Any]]:
        out = subprocess.run(
            [sys.executable, "-m", "bkcore", "--addr", self.address, "du", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        ).stdout
        records: list[dict[str, Any]] = json.loads(out)
        return records

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        return code


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def call(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 180))


def to_def(state: Any) -> pb.Definition:
    return pb.Definition().parse(state.marshal().to_bytes())


def solve_big(address: str, ref: str, fill: bytes = b"x") -> None:
    async def go() -> None:
        async with Client(address) as client:
            graph = llb.scratch().file(llb.mkfile(f"/{ref}", 0o644, fill * 100_000))
            await client.solve(cpb.SolveRequest(ref=ref, definition=to_def(graph)))

    call(go())


def reclaimable(d: Daemon) -> list[str]:
    return [r["id"] for r in d.du() if r["type"] == "regular" and r["reclaimable"]]


def wait_until(check: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_start_up_gc_by_default_policies_capped_by_gckeepstorage(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    root = tmp_path / "root"
    off = Daemon(root, "--oci-worker-gc", "false")
    daemons.append(off)
    solve_big(off.address, "a")
    solve_big(off.address, "b", b"y")
    assert len(reclaimable(off)) == 2  # GC is off: nothing collects them
    assert off.stop() == 0
    conf = tmp_path / "buildkitd.toml"
    conf.write_text("[worker.oci]\n  gc = true\n  gckeepstorage = 1\n")
    on = Daemon(root, "--config", str(conf), "--debug")
    daemons.append(on)

    async def workers() -> Any:
        async with Client(on.address) as client:
            return await client.list_workers()

    (worker,) = call(workers())
    assert [p.keep_bytes for p in worker.gc_policy] == [512_000_000, 1, 1, 1]
    assert [p.all for p in worker.gc_policy] == [False, False, False, True]
    wait_until(lambda: not reclaimable(on), "the start-up pass removed both records")
    assert b"gc: removed 2 records" in on.log.read_bytes()


def test_gc_after_a_build_keeps_what_a_running_build_holds(
    tmp_path: Path, daemons: list[Daemon], registry: Any, images: Any
) -> None:
    if shutil.which("runc") is None or os.geteuid() != 0:
        pytest.skip("needs runc and root")
    ref = images.push(registry, "ops/busybox:latest", images.busybox_image())
    conf = tmp_path / "d.toml"
    conf.write_text('[[worker.oci.gcpolicy]]\nkeepBytes = 1\nfilters = ["type==regular"]\n')
    d = Daemon(tmp_path / "root", "--config", str(conf))
    daemons.append(d)
    graph = llb.image(ref).sh("echo started; sleep 20; echo done > /out", custom_name="long")
    seen: dict[str, Any] = {}

    async def go() -> Any:
        async with Client(d.address) as client:
            long = asyncio.create_task(
                client.solve(cpb.SolveRequest(ref="opslong", definition=to_def(graph)))
            )
            async for message in client.status("opslong"):
                if any(log.msg == b"started\n" for log in message.logs):
                    break
            await asyncio.to_thread(solve_big, d.address, "short")
            # the pass after "short" removes its snapshot while "long" still runs
            while any(r["type"] == "regular" and r["reclaimable"] for r in d.du()):
                await asyncio.sleep(0.1)
            seen["long_running"] = not long.done()
            seen["in_use"] = [r["id"] for r in d.du() if r["in_use"]]
            return await long

    reply = call(go())
    assert isinstance(reply, cpb.SolveResponse)
    assert seen["long_running"], "the GC pass came only after the long build ended"
    assert seen["in_use"], "the running build's records were not in use"
    assert d.stop() == 0


def test_several_addresses_and_socket_group(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path / "root", "--group", str(os.getgid()), addresses=2)
    daemons.append(d)

    async def info(address: str) -> str:
        async with Client(address) as client:
            reply = await client.info()
            return str(reply.package)

    for address in d.addresses:
        st = os.stat(address.removeprefix("unix://"))
        assert stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o777 == 0o660
        assert st.st_gid == os.getgid()
        assert call(info(address)) == "bkcore"
    assert d.stop() == 0
    assert not any(Path(a.removeprefix("unix://")).exists() for a in d.addresses)


def test_bad_config_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("[worker.oci]\n  gc = true\n  snapshotter = 'overlayfs'\n")
    run = subprocess.run(
        [
            *(sys.executable, "-m", "bkcore", "--root", str(tmp_path / "r"), "daemon"),
            *("--addr", f"unix://{tmp_path}/x.sock", "--config", str(conf)),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr.startswith(f"error: {conf}:3: unknown key 'snapshotter' in [worker.oci]")
    assert run.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()
