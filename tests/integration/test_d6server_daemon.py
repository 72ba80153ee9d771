"""``bkcore daemon`` as a subprocess on a temp unix socket and root, every call made with
grpclib clients on the socket: workers/info/du/prune over ``--addr`` (same output as
embedded), raw LLB solved with runc from a registry image and pushed, the Status stream,
failures and bad input answered with a status while the daemon keeps serving, SIGTERM during
a build, TLS with client certificates."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from bkcore import llb
from bkcore.api import methods
from bkcore.api.client import Client, DaemonUnavailable
from bkcore.api.pb import control as cpb
from bkcore.errors import ExecError
from bkcore.llb import pb

pytestmark = pytest.mark.integration

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


class Daemon:
    def __init__(self, root: Path, address: str, proc: subprocess.Popen[bytes], log: Path):
        self.root = root
        self.address = address
        self.proc = proc
        self.log = log

    def cli(self, *args: str, remote: bool = True) -> subprocess.CompletedProcess[str]:
        where = ["--addr", self.address] if remote else ["--root", str(self.root)]
        return subprocess.run(
            [sys.executable, "-m", "bkcore", *where, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(
                f"daemon did not stop on SIGTERM: {self.log.read_text()}"
            ) from None


def start_daemon(tmp: Path, *extra: str, address: str | None = None) -> Daemon:
    root = tmp / "root"
    address = address or f"unix://{tmp}/bk.sock"
    log = tmp / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bkcore",
                "--root",
                str(root),
                "daemon",
                "--addr",
                address,
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while b"listening on" not in log.read_bytes():
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited ({proc.returncode}): {log.read_text()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"daemon did not start: {log.read_text()}")
        time.sleep(0.05)
    return Daemon(root, address, proc, log)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = start_daemon(tmp_path)
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            d.stop()


def call(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 180))


def need_runc() -> None:
    if shutil.which("runc") is None or os.geteuid() != 0:
        pytest.skip("needs runc and root")


def to_def(state: Any) -> pb.Definition:
    return pb.Definition().parse(state.marshal().to_bytes())


async def solve_with_status(
    address: str, request: cpb.SolveRequest
) -> tuple[cpb.SolveResponse | BaseException, list[cpb.StatusResponse]]:
    """Status opened first (as buildctl does), then Solve; both collected."""
    async with Client(address) as client:

        async def status() -> list[cpb.StatusResponse]:
            return [m async for m in client.status(request.ref)]

        task = asyncio.create_task(status())
        await asyncio.sleep(0.1)
        try:
            reply: cpb.SolveResponse | BaseException = await client.solve(request)
        except Exception as exc:
            reply = exc
        return reply, await task


# -- tests ----------------------------------------------------------------------------------------


def test_socket_and_cli_over_addr_match_embedded(daemon: Daemon) -> None:
    path = daemon.address.removeprefix("unix://")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    remote = daemon.cli("debug", "workers", "-v")
    local = daemon.cli("debug", "workers", "-v", remote=False)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and "Name:\t\trunc" in remote.stdout
    info = daemon.cli("debug", "info")
    assert info.returncode == 0 and info.stdout.startswith("BuildKit: bkcore ")
    env_info = subprocess.run(
        [sys.executable, "-m", "bkcore", "debug", "info", "--format", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "BKCORE_HOST": daemon.address},
        check=True,
    )
    assert json.loads(env_info.stdout)["buildkitVersion"]["package"] == "bkcore"
    du = daemon.cli("du")
    assert du.returncode == 0 and du.stdout.endswith("Reclaimable: 0B\nTotal:       0B\n")
    prune = daemon.cli("prune")
    assert (prune.returncode, prune.stdout) == (0, "Total:  0B\n")


def test_raw_llb_exec_status_push_then_du_and_prune(
    daemon: Daemon, registry: Any, images: Any
) -> None:
    need_runc()
    ref = images.push(registry, "d6/busybox:latest", images.busybox_image())
    graph = llb.image(ref).sh(
        "echo to-stdout; echo to-stderr >&2; echo x > /made", custom_name="say"
    )
    target = f"{registry.host}/d6/out:v1"
    request = cpb.SolveRequest(
        ref="d6build1",
        definition=to_def(graph),
        exporter="image",
        exporter_attrs={"name": target, "push": "true"},
    )
    reply, messages = call(solve_with_status(daemon.address, request))
    assert isinstance(reply, cpb.SolveResponse), reply
    digest = reply.exporter_response["containerimage.digest"]
    req = urllib.request.Request(
        f"http://{registry.host}/v2/d6/out/manifests/v1",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["Docker-Content-Digest"] == digest
    vertexes = {v.digest: v for m in messages for v in m.vertexes}  # last state wins
    say = [v for v in vertexes.values() if v.name == "say"]
    assert len(say) == 1 and say[0].completed.seconds > 0 and not say[0].error
    logs = [
        (log.stream, log.msg) for m in messages for log in m.logs if log.vertex == say[0].digest
    ]
    assert (1, b"to-stdout\n") in logs and (2, b"to-stderr\n") in logs

    remote = json.loads(daemon.cli("du", "--format", "json").stdout)
    local = json.loads(daemon.cli("du", "--format", "json", remote=False).stdout)
    assert remote and len(remote) == len(local)
    for a, b in zip(remote, local, strict=True):
        for key in ("id", "type", "size", "in_use", "reclaimable", "mutable", "description"):
            assert a[key] == b[key], key
        assert abs(a["last_used"] - b["last_used"]) < 1e-3
    pruned = daemon.cli("prune", "--format", "json")
    assert pruned.returncode == 0, pruned.stderr
    gone = json.loads(pruned.stdout)
    assert {r["id"] for r in gone["removed"]} == {r["id"] for r in local if r["reclaimable"]}
    after = json.loads(daemon.cli("du", "--format", "json").stdout)
    assert all(not r["reclaimable"] for r in after)


def test_failing_exec_is_an_error_status_and_the_daemon_keeps_serving(
    daemon: Daemon, registry: Any, images: Any
) -> None:
    need_runc()
    ref = images.push(registry, "d6/busybox:latest", images.busybox_image())
    graph = llb.image(ref).sh("echo failing; exit 3", custom_name="fail")
    request = cpb.SolveRequest(ref="d6fail", definition=to_def(graph))
    reply, messages = call(solve_with_status(daemon.address, request))
    assert isinstance(reply, ExecError), reply
    assert reply.exit_code == 3
    assert getattr(reply, "grpc_status", None) == Status.UNKNOWN
    failed = [v for m in messages for v in m.vertexes if v.name == "fail" and v.error]
    assert failed and reply.digest == failed[-1].digest
    assert failed[-1].error in str(reply) or str(reply) in failed[-1].error

    async def info() -> Any:
        async with Client(daemon.address) as client:
            return await client.info()

    assert call(info()).package == "bkcore"


def test_bad_input_gets_a_status_and_serving_goes_on(daemon: Daemon) -> None:
    async def go() -> None:
        async with Client(daemon.address) as client:
            channel = client.channel()
            # A frame announcing a 1 GiB SolveRequest: refused from its header.
            with pytest.raises(GRPCError) as info:
                async with channel.request(
                    methods.CONTROL_SOLVE, Cardinality.UNARY_UNARY, bytes, bytes
                ) as s:
                    await s.send_request()
                    await s._stream.send_data(struct.pack(">?I", False, 1 << 30) + b"\0" * 1024)
                    s._send_message_done = s._end_done = True
                    await s.recv_message()
                    await s.recv_trailing_metadata()
            assert info.value.status == Status.RESOURCE_EXHAUSTED
            # Malformed protobuf.
            with pytest.raises(Exception) as bad:
                await client.solve(
                    cpb.SolveRequest(ref="x", definition=pb.Definition(def_=[b"\x0a\x64ab"]))
                )
            assert getattr(bad.value, "grpc_status", None) == Status.INVALID_ARGUMENT
            assert str(bad.value).startswith("Solve x: ")
            # An input naming an op the definition does not hold.
            from bkcore.llb.digest import marshal

            dangling = marshal(pb.Op(inputs=[pb.Input(digest="sha256:" + "1" * 64)]))
            with pytest.raises(Exception) as cyc:
                await client.solve(
                    cpb.SolveRequest(ref="y", definition=pb.Definition(def_=[dangling]))
                )
            assert getattr(cyc.value, "grpc_status", None) == Status.INVALID_ARGUMENT
            # A frontend that needs the client's files: the frontend runs and says why.
            with pytest.raises(Exception) as fe:
                await client.solve(cpb.SolveRequest(ref="z", frontend="dockerfile.v0"))
            assert "dockerfile" in str(fe.value)
            assert (await client.info()).package == "bkcore"
            assert len(await client.list_workers()) == 1

    call(go())
    assert daemon.proc.poll() is None


def test_sigterm_cancels_a_running_build_and_cleans_up(
    daemon: Daemon, registry: Any, images: Any
) -> None:
    need_runc()
    ref = images.push(registry, "d6/busybox:latest", images.busybox_image())
    graph = llb.image(ref).sh("echo started; sleep 600", custom_name="long")
    request = cpb.SolveRequest(ref="d6long", definition=to_def(graph))

    async def go() -> Any:
        async with Client(daemon.address) as client:
            solve = asyncio.create_task(client.solve(request))
            async for message in client.status("d6long"):
                if any(log.msg == b"started\n" for log in message.logs):
                    break
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                return await solve
            except Exception as exc:
                return exc

    outcome = call(go())
    assert isinstance(outcome, Exception), outcome
    assert daemon.proc.wait(STOP_TIMEOUT) == 0
    assert b"bkcore daemon stopped" in daemon.log.read_bytes()
    assert not Path(daemon.address.removeprefix("unix://")).exists()
    runc_root = daemon.root / "runc" / "runc"
    listed = subprocess.run(
        ["runc", "--root", str(runc_root), "list", "-q"], capture_output=True, text=True
    )
    assert listed.stdout.strip() == ""
    # Nothing left in use: a new embedded command sees every record reclaimable.
    du = json.loads(daemon.cli("du", "--format", "json", remote=False).stdout)
    assert all(not r["in_use"] for r in du)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def test_tcp_needs_tls_and_client_certificates(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    port = _free_port()
    plain = subprocess.run(
        [
            sys.executable,
            "-m",
            "bkcore",
            "--root",
            str(tmp_path / "r0"),
            "daemon",
            "--addr",
            f"tcp://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert plain.returncode == 1
    assert plain.stderr.strip().splitlines() == [
        f"error: tcp://127.0.0.1:{port} needs --tlscert and --tlskey (no plain TCP)"
    ]
    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=d6 test ca",
        cwd=certs,
    )
    (certs / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=certs,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            cwd=certs,
        )
    address = f"tcp://127.0.0.1:{port}"
    d = start_daemon(
        tmp_path,
        "--tlscert",
        str(certs / "server.pem"),
        "--tlskey",
        str(certs / "server.key"),
        "--tlscacert",
        str(certs / "ca.pem"),
        address=address,
    )
    try:

        async def info(**tls: str) -> Any:
            async with Client(address, **tls) as client:
                return await client.info()

        version = call(
            info(
                tls_ca=str(certs / "ca.pem"),
                tls_cert=str(certs / "client.pem"),
                tls_key=str(certs / "client.key"),
            )
        )
        assert version.package == "bkcore"
        with pytest.raises(DaemonUnavailable) as refused:
            call(info(tls_ca=str(certs / "ca.pem")))  # no client certificate
        # TLS 1.3: the client's handshake completes first, then the daemon drops it.
        assert f"the daemon at {address} " in str(refused.value)
    finally:
        assert d.stop() == 0


def test_dockerfile_frontend_with_the_clients_session_and_local_output(
    daemon: Daemon, registry: Any, images: Any, tmp_path: Path
) -> None:
    """buildctl's shape without the gateway forwarder: the client opens Control.Session
    serving its context and Dockerfile (FileSync) and receiving the output (FileSend);
    Solve{Frontend: dockerfile.v0, Session, Exporter: local} builds with them."""
    need_runc()
    from bkcore.session.grpc_transport import attach_session
    from bkcore.session.session import Session
    from bkcore.sessions.filesync.filesend import FileSendTarget
    from bkcore.sessions.filesync.provider import FileSyncProvider

    ref = images.push(registry, "d6/busybox:latest", images.busybox_image())
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {ref} AS base\n"
        "COPY greeting.txt /greeting.txt\n"
        "RUN tr a-z A-Z < /greeting.txt > /loud.txt\n"
        "FROM scratch\n"
        "COPY --from=base /loud.txt /greeting.txt /\n"
    )
    (ctx / "greeting.txt").write_text("hello from the client\n")
    out = tmp_path / "out"

    async def go() -> cpb.SolveResponse:
        session = Session(name="d6test", shared_key="d6test")
        session.allow(FileSyncProvider({"context": str(ctx), "dockerfile": str(ctx)}))
        session.allow(FileSendTarget(dest_dir=str(out)))
        async with Client(daemon.address) as client:
            async with attach_session(client.channel(), session):
                return await client.solve(
                    cpb.SolveRequest(
                        ref="d6df",
                        session=session.id,
                        frontend="dockerfile.v0",
                        exporter="local",
                        frontend_attrs={"filename": "Dockerfile"},
                    )
                )

    call(go())
    assert (out / "loud.txt").read_text() == "HELLO FROM THE CLIENT\n"
    assert (out / "greeting.txt").read_text() == "hello from the client\n"
    assert not (daemon.root / "client").exists() and not Path("client").exists()


def test_solve_naming_a_session_that_never_connects_fails_clearly(daemon: Daemon) -> None:
    async def go() -> None:
        async with Client(daemon.address) as client:
            with pytest.raises(Exception) as info:
                await client.solve(
                    cpb.SolveRequest(
                        ref="nosess",
                        session="nosuchsession0000000000000",
                        definition=to_def(llb.scratch().file(llb.mkfile("/a", 0o644, b"a"))),
                        exporter="local",
                    )
                )
            assert "no active session for nosuchsession0000000000000" in str(info.value)

    call(go())


def test_forwarded_build_in_buildctls_call_order(daemon: Daemon, tmp_path: Path) -> None:
    """buildctl v0.11's sequence (control.md §4): ListWorkers, Status, Solve without
    Definition or Frontend, Session, then LLBBridge Ping/Solve/Return with the build id
    header; the returned result is exported (tar, sent to the client's session)."""
    from bkcore.api.pb import gateway as gpb
    from bkcore.session.grpc_transport import attach_session
    from bkcore.session.session import Session
    from bkcore.sessions.filesync.filesend import FileSendTarget

    out = tmp_path / "out.tar"
    graph = llb.scratch().file(llb.mkfile("/forwarded.txt", 0o644, b"via LLBBridge\n"))

    async def go() -> tuple[cpb.SolveResponse, list[cpb.StatusResponse]]:
        session = Session(name="d6fwd", shared_key="d6fwd")
        session.allow(FileSendTarget(file=str(out)))
        async with Client(daemon.address) as client:
            assert len(await client.list_workers()) == 1
            status = asyncio.create_task(collect(client.status("d6fwd")))
            solve = asyncio.create_task(
                client.solve(cpb.SolveRequest(ref="d6fwd", session=session.id, exporter="tar"))
            )
            async with attach_session(client.channel(), session):
                md = {methods.BUILD_ID: "d6fwd"}
                bridge = client.channel()

                async def unary(path: str, request: Any, reply: Any) -> Any:
                    async with bridge.request(
                        path, Cardinality.UNARY_UNARY, type(request), reply, metadata=md
                    ) as s:
                        await s.send_message(request, end=True)
                        return await s.recv_message()

                pong = await unary(methods.LLBBRIDGE_PING, gpb.PingRequest(), gpb.PongResponse)
                assert pong.frontend_api_caps and pong.workers
                solved = await unary(
                    methods.LLBBRIDGE_SOLVE,
                    gpb.SolveRequest(definition=to_def(graph), allow_result_return=True),
                    gpb.SolveResponse,
                )
                await unary(
                    methods.LLBBRIDGE_RETURN,
                    gpb.ReturnRequest(result=gpb.Result(ref=gpb.Ref(id=solved.result.ref.id))),
                    gpb.ReturnResponse,
                )
                reply = await solve
            return reply, await status

    async def collect(stream: Any) -> list[cpb.StatusResponse]:
        return [m async for m in stream]

    reply, messages = call(go())
    assert isinstance(reply, cpb.SolveResponse)
    import tarfile

    with tarfile.open(out) as tar:
        member = tar.extractfile("forwarded.txt")
        assert member is not None and member.read() == b"via LLBBridge\n"
    assert any(v.completed.seconds for m in messages for v in m.vertexes)


def _solve_big(address: str, ref: str) -> list[Any]:
    async def go() -> list[Any]:
        async with Client(address) as client:
            workers = await client.list_workers()
            graph = llb.scratch().file(llb.mkfile("/big", 0o644, b"x" * 100_000))
            await client.solve(cpb.SolveRequest(ref=ref, definition=to_def(graph)))
            return workers

    result: list[Any] = call(go())
    return result


def _regular(d: Daemon) -> list[Any]:
    du = json.loads(d.cli("du", "--format", "json").stdout)
    return [r for r in du if r["type"] == "regular" and r["reclaimable"]]


def test_gc_policy_prunes_after_builds_and_a_second_daemon_is_refused(tmp_path: Path) -> None:
    # Control: without a policy the build leaves a reclaimable snapshot behind.
    plain = start_daemon(tmp_path)
    try:
        _solve_big(plain.address, "gc0")
        assert _regular(plain)
    finally:
        assert plain.stop() == 0
    conf = tmp_path / "bkcored.toml"
    conf.write_text('[[worker.gcpolicy]]\nkeepBytes = 1\nfilters = ["type==regular"]\n')
    d = start_daemon(tmp_path, "--config", str(conf))
    try:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "bkcore",
                "--root",
                str(tmp_path / "other"),
                "daemon",
                "--addr",
                d.address,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert second.stderr == f"error: another daemon is listening on {d.address}\n"
        (worker,) = _solve_big(d.address, "gc1")
        assert [(p.keep_bytes, list(p.filters)) for p in worker.gc_policy] == [
            (1, ["type==regular"])
        ]
        deadline = time.monotonic() + 60
        while _regular(d):  # the GC pass runs after the Solve has answered
            assert time.monotonic() < deadline, _regular(d)
            time.sleep(0.1)
    finally:
        assert d.stop() == 0
