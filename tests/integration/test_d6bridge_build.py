"""``bkcore --addr ADDR build`` against a ``bkcore daemon`` subprocess (temp unix socket and
root): raw LLB from stdin with ``--local`` and ``--output type=local|tar``, a Dockerfile
through ``dockerfile.v0`` with the client's context, secrets served by the client's session,
failures with exit status 1 and the Dockerfile line -- each compared with the same build
embedded (``--root``): same files, same error lines."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb

pytestmark = pytest.mark.integration

START_TIMEOUT = 60.0


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


def bk(
    where: list[str], *args: str, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "BKCORE_HOST"}
    return subprocess.run(
        [sys.executable, "-m", "bkcore", *where, "build", "--progress", "plain", *args],
        input=stdin,
        capture_output=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env=env,
    )


def remote(d: Daemon) -> list[str]:
    return ["--addr", d.address]


def embedded(tmp_path: Path) -> list[str]:
    return ["--root", str(tmp_path / "embedded-root")]


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            info = path.lstat()
            if path.is_symlink():
                out[rel] = (info.st_mode, os.readlink(path).encode())
            elif path.is_file():
                out[rel] = (info.st_mode, path.read_bytes())
            else:
                out[rel] = (info.st_mode, b"")
    return out


def tar_members(data: bytes) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m) if m.isfile() else None
            out[m.name] = (m.mode, f.read() if f else m.linkname.encode())
    return out


def error_lines(stderr: bytes) -> list[str]:
    """The error line and its snippet; the ids of the store's refs (which differ from one
    store to another) replaced by REF."""
    lines = [re.sub(r"\bref [0-9a-f]{32}\b", "ref REF", x) for x in stderr.decode().splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    return lines[start:]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "sub" / "run.sh").chmod(0o755)
    os.symlink("../a.txt", src / "sub" / "link")
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    return src


def copy_definition() -> bytes:
    state = llb.scratch().file(
        llb.copy(llb.local("src"), "/", "/out", dir_contents_only=True, create_dest_path=True)
    )
    data: bytes = state.file(llb.mkfile("/out/made.txt", 0o600, b"made")).marshal().to_bytes()
    return data


def test_raw_llb_with_local_source_to_local_and_tar_outputs(
    daemon: Daemon, source: Path, tmp_path: Path
) -> None:
    definition = copy_definition()
    got = bk(
        remote(daemon),
        "--local",
        f"src={source}",
        "--output",
        f"type=local,dest={tmp_path / 'remote-out'}",
        stdin=definition,
    )
    assert got.returncode == 0, got.stderr.decode()
    assert b"exporting to client directory" in got.stderr  # the daemon's progress, drawn here
    want = bk(
        embedded(tmp_path),
        "--local",
        f"src={source}",
        "--output",
        f"type=local,dest={tmp_path / 'embedded-out'}",
        stdin=definition,
    )
    assert want.returncode == 0, want.stderr.decode()
    files = tree(tmp_path / "remote-out")
    assert files == tree(tmp_path / "embedded-out")
    assert files["out/a.txt"][1] == b"alpha\n"
    assert files["out/sub/run.sh"][0] & 0o777 == 0o755
    assert files["out/sub/link"][1] == b"../a.txt"
    assert files["out/big.bin"][1] == (source / "big.bin").read_bytes()
    assert files["out/made.txt"] == (0o100600, b"made")

    # tar on stdout (dest=-) and into a file: the same members as embedded
    piped = bk(
        remote(daemon), "--local", f"src={source}", "--output", "type=tar,dest=-", stdin=definition
    )
    assert piped.returncode == 0, piped.stderr.decode()
    to_file = bk(
        remote(daemon),
        "--local",
        f"src={source}",
        "--output",
        f"type=tar,dest={tmp_path / 'out.tar'}",
        stdin=definition,
    )
    assert to_file.returncode == 0, to_file.stderr.decode()
    local = bk(
        embedded(tmp_path),
        "--local",
        f"src={source}",
        "--output",
        "type=tar,dest=-",
        stdin=definition,
    )
    members = tar_members(piped.stdout)
    assert members == tar_members((tmp_path / "out.tar").read_bytes())
    assert members == tar_members(local.stdout)
    assert members["out/made.txt"] == (0o600, b"made")
    # nothing of the client's was written on the daemon's side
    assert not list(daemon.root.rglob("remote-out"))


def test_dockerfile_build_through_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nARG NAME=world\nCOPY sub/ /in/\nCOPY a.txt /a-$NAME.txt\n"
    )
    (ctx / "a.txt").write_text("a\n")
    (ctx / "sub" / "b.txt").write_text("b\n")
    (ctx / "ignored.txt").write_text("no\n")
    (ctx / ".dockerignore").write_text("ignored.txt\n")
    # the short form, as a person types it
    got = bk(remote(daemon), "--build-arg", "NAME=there", "-o", str(tmp_path / "r1"), str(ctx))
    assert got.returncode == 0, got.stderr.decode()
    assert tree(tmp_path / "r1") == {
        "in": (0o40755, b""),
        "in/b.txt": (0o100644, b"b\n"),
        "a-there.txt": (0o100644, b"a\n"),
    }
    # buildctl's frontend form
    got = bk(
        remote(daemon),
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={ctx}",
        "--local",
        f"dockerfile={ctx}",
        "--output",
        f"type=local,dest={tmp_path / 'r2'}",
    )
    assert got.returncode == 0, got.stderr.decode()
    assert sorted(tree(tmp_path / "r2")) == ["a-world.txt", "in", "in/b.txt"]
    want = bk(embedded(tmp_path), "-o", str(tmp_path / "e2"), str(ctx))
    assert want.returncode == 0
    assert tree(tmp_path / "r2") == tree(tmp_path / "e2")


def test_dockerfile_errors_exit_1_with_the_line(daemon: Daemon, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /\nFOO bar\n")
    got = bk(remote(daemon), "-o", str(tmp_path / "out"), str(ctx))
    want = bk(embedded(tmp_path), "-o", str(tmp_path / "out2"), str(ctx))
    assert got.returncode == 1 and want.returncode == 1
    lines = error_lines(got.stderr)
    assert lines[0].startswith("error: Dockerfile:3: ")
    assert "unknown instruction: FOO" in lines[0]
    assert " 3 | >>> FOO bar" in lines
    assert lines == error_lines(want.stderr)
    assert not (tmp_path / "out").exists()

    # a missing COPY source: a build error naming the line, nothing written
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    got = bk(remote(daemon), "-o", str(tmp_path / "out"), str(ctx))
    want = bk(embedded(tmp_path), "-o", str(tmp_path / "out2"), str(ctx))
    assert got.returncode == 1 and want.returncode == 1
    lines = error_lines(got.stderr)
    assert "missing.txt" in lines[0] and "Dockerfile:2" in "\n".join(lines)
    assert lines == error_lines(want.stderr)
    assert not (tmp_path / "out").exists()


def test_run_failure_and_secrets_through_the_session(
    daemon: Daemon, tmp_path: Path, registry: Any, images: Any
) -> None:
    if os.geteuid() != 0:
        pytest.fail("runc builds need root")
    ref = images.push(registry, "d6bridge/busybox:latest", images.busybox_image())
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    secret = tmp_path / "token.txt"
    secret.write_text("s3cr3t-value")
    (ctx / "Dockerfile").write_text(
        f"FROM {ref}\n"
        "RUN --mount=type=secret,id=tok cat /run/secrets/tok | tr a-z A-Z > /seen\n"
        "FROM scratch\nCOPY --from=0 /seen /seen\n"
    )
    got = bk(
        remote(daemon), "--secret", f"id=tok,src={secret}", "-o", str(tmp_path / "o"), str(ctx)
    )
    assert got.returncode == 0, got.stderr.decode()
    assert (tmp_path / "o" / "seen").read_text() == "S3CR3T-VALUE"
    assert b"s3cr3t-value" not in got.stderr
    assert b"s3cr3t-value" not in daemon.log.read_bytes()

    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN echo failing && exit 3\n")
    got = bk(remote(daemon), str(ctx))
    want = bk(embedded(tmp_path), str(ctx))
    assert got.returncode == 1 and want.returncode == 1
    lines = error_lines(got.stderr)
    assert "exit code: 3" in lines[0]
    assert " 2 | >>> RUN echo failing && exit 3" in lines
    assert lines == error_lines(want.stderr)
    assert b"failing" in got.stderr  # the step's output came through the Status stream


def test_bad_input_and_unreachable_daemon(daemon: Daemon, tmp_path: Path) -> None:
    got = bk(remote(daemon), "--output", f"type=local,dest={tmp_path / 'o'}", stdin=b"\xff\x00junk")
    assert got.returncode == 1
    lines = got.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "<stdin>" in lines[0]
    two = bk(
        remote(daemon),
        "--output",
        f"type=local,dest={tmp_path / 'a'}",
        "--output",
        "type=tar,dest=-",
        stdin=copy_definition(),
    )
    assert two.returncode == 1
    assert two.stderr.decode().splitlines()[0].startswith("error: ")
    nowhere = f"unix://{tmp_path}/nothing.sock"
    got = bk(["--addr", nowhere], "--local", f"src={tmp_path}", stdin=copy_definition())
    assert got.returncode == 1
    lines = got.stderr.decode().splitlines()
    assert any(line.startswith("error: ") and nowhere in line for line in lines)
    assert "Traceback" not in got.stderr.decode()


CAPTURE = Path(__file__).resolve().parents[1] / "data" / "vectors" / "control_capture.json"


def test_buildctl_forwarder_sequence_replayed_from_the_capture(
    daemon: Daemon, tmp_path: Path
) -> None:
    """What buildctl v0.11.6 sent for ``--frontend dockerfile.v0`` (control_capture.json),
    replayed byte for byte on the daemon's socket: ListWorkers, Status{Ref}, Solve{Ref,
    Session, Cache} (the gateway forwarder: no Definition, no Frontend), Control.Session with
    the captured session id serving the context, then LLBBridge Ping and Solve{Frontend:
    dockerfile.v0, allowResultReturn, allowResultArrayRef} with the build id header; the
    client reads a file of the result and Returns it; the Control.Solve then completes and
    the Status stream carried the frontend's steps."""
    import asyncio
    import json

    from grpclib.const import Cardinality

    from bkcore.api import methods
    from bkcore.api.client import Client
    from bkcore.api.pb import control as cpb
    from bkcore.api.pb import gateway as gpb
    from bkcore.session.grpc_transport import attach_session
    from bkcore.session.session import Session
    from bkcore.sessions.filesync.provider import FileSyncProvider

    samples = json.loads(CAPTURE.read_text())["samples"]
    sent = {
        s["path"]: bytes.fromhex(s["hex"]) for s in samples if s["direction"] == "client->daemon"
    }
    solve_fields = dict(
        (n, v) for n, v in next(s["decoded"] for s in samples if s["path"] == methods.CONTROL_SOLVE)
    )
    build_ref, session_id = solve_fields[1], solve_fields[5]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /copied.txt\n")
    (ctx / "a.txt").write_text("from the client\n")

    async def unary(channel: Any, path: str, body: bytes, reply: Any, **md: str) -> Any:
        metadata = {methods.BUILD_ID: md["build_id"]} if md else None
        async with channel.request(
            path, Cardinality.UNARY_UNARY, bytes, reply, metadata=metadata
        ) as stream:
            await stream.send_message(body, end=True)
            return await stream.recv_message()

    async def go() -> tuple[Any, list[cpb.StatusResponse], bytes]:
        session = Session(session_id, name="buildctl", shared_key="replay")
        session.allow(FileSyncProvider({"context": str(ctx), "dockerfile": str(ctx)}))
        async with Client(daemon.address) as client:
            channel = client.channel()
            workers = await unary(
                channel,
                methods.CONTROL_LIST_WORKERS,
                sent[methods.CONTROL_LIST_WORKERS],
                cpb.ListWorkersResponse,
            )
            assert workers.record
            async with attach_session(channel, session):

                async def status() -> list[cpb.StatusResponse]:
                    async with channel.request(
                        methods.CONTROL_STATUS,
                        Cardinality.UNARY_STREAM,
                        bytes,
                        cpb.StatusResponse,
                    ) as stream:
                        await stream.send_message(sent[methods.CONTROL_STATUS], end=True)
                        return [m async for m in stream]

                statuses = asyncio.ensure_future(status())
                solve = asyncio.ensure_future(
                    unary(
                        channel,
                        methods.CONTROL_SOLVE,
                        sent[methods.CONTROL_SOLVE],
                        cpb.SolveResponse,
                    )
                )
                pong = await unary(
                    channel,
                    methods.LLBBRIDGE_PING,
                    sent[methods.LLBBRIDGE_PING],
                    gpb.PongResponse,
                    build_id=build_ref,
                )
                assert any(c.id == "solve.base" for c in pong.frontend_api_caps)
                result = await unary(
                    channel,
                    methods.LLBBRIDGE_SOLVE,
                    sent[methods.LLBBRIDGE_SOLVE],
                    gpb.SolveResponse,
                    build_id=build_ref,
                )
                ref = result.result.ref
                assert ref.id
                read = await unary(
                    channel,
                    methods.path(methods.LLBBRIDGE, "ReadFile"),
                    bytes(gpb.ReadFileRequest(ref=ref.id, file_path="copied.txt")),
                    gpb.ReadFileResponse,
                    build_id=build_ref,
                )
                await unary(
                    channel,
                    methods.LLBBRIDGE_RETURN,
                    bytes(gpb.ReturnRequest(result=result.result)),
                    gpb.ReturnResponse,
                    build_id=build_ref,
                )
                reply = await solve
                return reply, await statuses, read.data

    reply, statuses, data = asyncio.run(asyncio.wait_for(go(), 180))
    assert isinstance(reply, cpb.SolveResponse)
    assert data == b"from the client\n"
    names = {v.name for s in statuses for v in s.vertexes}
    assert "[internal] load build definition from Dockerfile" in names
    assert any("COPY a.txt /copied.txt" in n for n in names)


def test_forwarded_build_error_returned_by_the_client(daemon: Daemon, tmp_path: Path) -> None:
    """The forwarder as buildctl runs it when the frontend fails: the LLBBridge Solve gets the
    Dockerfile error (with its line), the client Returns it as a google.rpc.Status, and the
    waiting Control.Solve fails with the same error class, message and line; the daemon keeps
    serving (a second forwarded build under another ref succeeds)."""
    import asyncio

    from grpclib.exceptions import GRPCError

    from bkcore.api import methods
    from bkcore.api.client import Client
    from bkcore.api.errors import details_of, encode_details, from_grpc_error, to_status
    from bkcore.api.pb import control as cpb
    from bkcore.api.pb import gateway as gpb
    from bkcore.api.pb import status as rpc
    from bkcore.errors import BkError
    from bkcore.llb.digest import present
    from bkcore.session.grpc_transport import attach_session
    from bkcore.session.session import Session
    from bkcore.sessions.filesync.provider import FileSyncProvider

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nNOPE x\n")

    async def bridge(client: Client, name: str, request: Any, reply: Any, ref: str) -> Any:
        from grpclib.const import Cardinality

        async with client.channel().request(
            methods.path(methods.LLBBRIDGE, name),
            Cardinality.UNARY_UNARY,
            type(request),
            reply,
            metadata={methods.BUILD_ID: ref},
        ) as stream:
            await stream.send_message(request, end=True)
            return await stream.recv_message()

    async def forwarded(client: Client, session: Session, ref: str) -> BkError | None:
        solve = asyncio.ensure_future(
            client.solve(
                cpb.SolveRequest(ref=ref, session=session.id, cache=present(cpb.CacheOptions()))
            )
        )
        request = gpb.SolveRequest(
            frontend="dockerfile.v0", allow_result_return=True, allow_result_array_ref=True
        )
        try:
            result = await bridge(client, "Solve", request, gpb.SolveResponse, ref)
        except GRPCError as err:
            exc = from_grpc_error(err)
            code, message, _ = to_status(exc)
            status = rpc.Status().parse(encode_details(code, message, details_of(exc)))
            await bridge(client, "Return", gpb.ReturnRequest(error=status), gpb.ReturnResponse, ref)
        else:
            await bridge(
                client,
                "Return",
                gpb.ReturnRequest(result=result.result),
                gpb.ReturnResponse,
                ref,
            )
        try:
            await solve
        except BkError as exc:
            return exc
        return None

    def new_session() -> Session:
        session = Session(name="fwd", shared_key="fwd")
        session.allow(FileSyncProvider({"context": str(ctx), "dockerfile": str(ctx)}))
        return session

    async def go() -> tuple[BkError | None, BkError | None]:
        # a session per build, as buildctl: the build's local sources are keyed by the
        # session id (BuildKit's local source cache key), so a second build in the same
        # session would reuse the first one's Dockerfile
        async with Client(daemon.address) as client:
            session = new_session()
            async with attach_session(client.channel(), session):
                failed = await forwarded(client, session, "fwd-error")
            (ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
            session = new_session()
            async with attach_session(client.channel(), session):
                ok = await forwarded(client, session, "fwd-ok")
        return failed, ok

    failed, ok = asyncio.run(asyncio.wait_for(go(), 180))
    assert failed is not None and ok is None
    assert type(failed).__name__ == "FrontendError"
    assert str(failed).startswith("Dockerfile:2: ") and "unknown instruction: NOPE" in str(failed)
    assert " 2 | >>> NOPE x" in (getattr(failed, "detail_lines", None) or [])


def test_interrupting_the_client_cancels_the_build_in_the_daemon(
    daemon: Daemon, tmp_path: Path, registry: Any, images: Any
) -> None:
    """Ctrl-C on ``bkcore --addr ... build`` during a long RUN: the client exits 130, the
    daemon cancels the build (its container is gone, nothing stays in use) and keeps serving
    (the next build through it works)."""
    ref = images.push(registry, "d6bridge/busybox:latest", images.busybox_image())
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN echo started-sleep && sleep 317\n")
    env = {k: v for k, v in os.environ.items() if k != "BKCORE_HOST"}
    with open(tmp_path / "client.err", "wb") as err:
        client = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bkcore",
                *remote(daemon),
                "build",
                "--progress",
                "plain",
                str(ctx),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while b"started-sleep" not in (tmp_path / "client.err").read_bytes():
            assert client.poll() is None, (tmp_path / "client.err").read_text()
            assert time.monotonic() < deadline, (tmp_path / "client.err").read_text()
            time.sleep(0.1)
        client.send_signal(signal.SIGINT)
        assert client.wait(60) == 130
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    # the daemon's RUN container goes away (runc lists none still running under its root)
    deadline = time.monotonic() + 60
    while True:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False)
        if "sleep 317" not in ps.stdout:
            break
        assert time.monotonic() < deadline, "the RUN of the interrupted build still runs"
        time.sleep(0.2)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    again = bk(remote(daemon), "-o", str(tmp_path / "o"), str(ctx))
    assert again.returncode == 0, again.stderr.decode()
    assert (tmp_path / "o" / "Dockerfile").exists()
