"""BuildKit's own buildctl v0.11.6 against ``bkcore daemon``, without Go: what buildctl sent
(recorded by tests/data/buildctl/record.py, see the README there) is replayed byte for byte on
the daemon's socket, in buildctl's order (ListWorkers, Status, Control.Session, Solve, then the
gateway forwarder's LLBBridge Ping / Solve / Return), with the client's session served by
bkcore's own attachables (file sync of the --local directories, the --secret, FileSend of the
output). The ids the daemon hands out (result refs) are the only bytes mapped: a recorded
Return naming the recorded ref is re-encoded with the live one, after checking that the
re-encoding of the recorded message gives the recorded bytes.

Scenarios: raw LLB from stdin with --local (include/exclude patterns, shared key hint),
--secret as a mount and as env, and --output type=local|tar|oci; --frontend dockerfile.v0 with
--opt target and build args; a failing RUN (the error buildctl Returns and the Solve's status);
du -v --filter; prune --keep-duration --filter; prune --all.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "buildctl"
START_TIMEOUT = 60.0
SECRET = b"s3cret-from-the-client\n"

CONTROL = "/moby.buildkit.v1.Control/"
BRIDGE = "/moby.buildkit.v1.frontend.LLBBridge/"
SESSION = CONTROL + "Session"


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
def daemon(tmp_path: Path, busybox_rootfs: Path) -> Iterator[Daemon]:
    import tempfile

    root = tmp_path / "daemon-root"
    sock_dir = Path(tempfile.mkdtemp(prefix="bkio-", dir="/tmp"))  # short socket path
    address = f"unix://{sock_dir}/bk.sock"
    log = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if k != "BKCORE_HOST"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bkcore", "--root", str(root), "daemon", "--addr", address],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
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
        import shutil

        shutil.rmtree(sock_dir, ignore_errors=True)


# -- the recordings ------------------------------------------------------------------------


@dataclass
class Recorded:
    """One HTTP/2 stream of a recording."""

    path: str
    metadata: list[tuple[str, str]]
    sent: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)


def load(name: str) -> list[Recorded]:
    """The streams of tests/data/buildctl/NAME.json in the order buildctl opened them."""
    samples = json.loads((DATA / f"{name}.json").read_text())["samples"]
    streams: dict[tuple[int, int], Recorded] = {}
    for s in samples:
        key = (s["conn"], s["stream"])
        if s["kind"] == "headers":
            streams[key] = Recorded(s["path"], [(k, v) for k, v in s["metadata"]])
            continue
        st = streams[key]
        if s["kind"] == "trailers":
            st.trailers.update({k: v for k, v in s["trailers"]})
        elif s["direction"] == "client->daemon":
            st.sent.append(bytes.fromhex(s["hex"]))
        elif "hex" in s:
            st.received.append(bytes.fromhex(s["hex"]))
    return list(streams.values())


def types(path: str) -> tuple[Any, Any]:
    from bkcore.api.pb import control as cpb
    from bkcore.api.pb import gateway as gpb

    return {
        CONTROL + "Solve": (cpb.SolveRequest, cpb.SolveResponse),
        CONTROL + "Status": (cpb.StatusRequest, cpb.StatusResponse),
        CONTROL + "ListWorkers": (cpb.ListWorkersRequest, cpb.ListWorkersResponse),
        CONTROL + "DiskUsage": (cpb.DiskUsageRequest, cpb.DiskUsageResponse),
        CONTROL + "Prune": (cpb.PruneRequest, cpb.UsageRecord),
        CONTROL + "Info": (cpb.InfoRequest, cpb.InfoResponse),
        BRIDGE + "Ping": (gpb.PingRequest, gpb.PongResponse),
        BRIDGE + "Solve": (gpb.SolveRequest, gpb.SolveResponse),
        BRIDGE + "Return": (gpb.ReturnRequest, gpb.ReturnResponse),
        BRIDGE + "ReadFile": (gpb.ReadFileRequest, gpb.ReadFileResponse),
    }[path]


def result_ids(result: Any) -> list[str]:
    import betterproto

    if result is None:
        return []
    which, found = betterproto.which_one_of(result, "result")
    value: Any = found
    if which == "ref":
        return [value.id] if value.id else []
    if which == "refs":
        return [r.id for r in value.refs.values()]
    return []


def remap(path: str, body: bytes, ids: dict[str, str]) -> bytes:
    """``body`` with the recorded result ref ids replaced by the live ones (unchanged bytes
    when it names none); the recorded message must re-encode to the recorded bytes."""
    from bkcore.api.codec import GoCodec, decode

    if not any(old.encode() in body for old in ids):
        return body
    request_type, _ = types(path)
    msg = decode(body, request_type)
    codec = GoCodec()
    assert codec.encode(msg, request_type) == body, f"{path}: re-encoding changed the bytes"
    if path == BRIDGE + "Return":
        import betterproto

        which, value = betterproto.which_one_of(msg.result, "result")
        found: Any = value
        refs = [found] if which == "ref" else list(found.refs.values()) if which == "refs" else []
        for ref in refs:
            ref.id = ids.get(ref.id, ref.id)
    elif hasattr(msg, "ref") and isinstance(msg.ref, str):
        msg.ref = ids.get(msg.ref, msg.ref)
    out: bytes = codec.encode(msg, request_type)
    return out


@dataclass
class Replayed:
    """What the daemon answered, per recorded stream path (in order)."""

    replies: dict[str, list[Any]] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)

    def one(self, path: str) -> Any:
        assert path not in self.errors, f"{path} failed: {self.errors[path]}"
        (reply,) = self.replies[path]
        return reply


def replay(address: str, streams: Sequence[Recorded], attachables: Sequence[Any]) -> Replayed:
    """Send the recorded client messages of ``streams`` to the daemon at ``address``."""
    return asyncio.run(asyncio.wait_for(_replay(address, streams, attachables), 240))


async def _replay(
    address: str, streams: Sequence[Recorded], attachables: Sequence[Any]
) -> Replayed:
    import contextlib

    from grpclib.const import Cardinality
    from grpclib.exceptions import GRPCError

    from bkcore.api.client import Client
    from bkcore.session.grpc_transport import attach_session
    from bkcore.session.session import Session

    out = Replayed()
    ids: dict[str, str] = {}

    async def call(channel: Any, st: Recorded) -> None:
        _, reply_type = types(st.path)
        md = [(k, v) for k, v in st.metadata if k != "content-type"]
        card = (
            Cardinality.UNARY_STREAM
            if st.path.endswith(("/Status", "/Prune"))
            else (Cardinality.UNARY_UNARY)
        )
        (body,) = st.sent
        body = remap(st.path, body, ids)
        replies: list[Any] = []
        try:
            async with channel.request(
                st.path, card, bytes, reply_type, metadata=md or None
            ) as stream:
                await stream.send_message(body, end=True)
                async for reply in stream:
                    replies.append(reply)
        except GRPCError as exc:
            out.errors[st.path] = exc
        out.replies.setdefault(st.path, []).extend(replies)
        if st.path == BRIDGE + "Solve" and replies and st.received:
            recorded = reply_type().parse(st.received[0])
            ids.update(zip(result_ids(recorded.result), result_ids(replies[0].result), strict=True))

    session_stream = next((st for st in streams if st.path == SESSION), None)
    async with Client(address) as client:
        channel = client.channel()
        async with contextlib.AsyncExitStack() as stack:
            if session_stream is not None:
                md = dict(session_stream.metadata)
                session = Session(
                    md["x-docker-expose-session-uuid"],
                    name=md.get("x-docker-expose-session-name", ""),
                    shared_key=md.get("x-docker-expose-session-sharedkey", ""),
                )
                for attachable in attachables:
                    session.allow(attachable)
                await stack.enter_async_context(attach_session(channel, session))
            # Status and the Control.Solve wait for the build (buildctl runs them
            # concurrently); everything else in buildctl's order, one after the other.
            waiting = [
                asyncio.ensure_future(call(channel, st))
                for st in streams
                if st.path in (CONTROL + "Status", CONTROL + "Solve")
            ]
            try:
                for st in streams:
                    if st.path not in (SESSION, CONTROL + "Status", CONTROL + "Solve"):
                        await call(channel, st)
                await asyncio.gather(*waiting)
            finally:
                for task in waiting:
                    task.cancel()
    return out


# -- helpers ----------------------------------------------------------------------------------


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


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The --local src directory (include *.txt and sub, exclude sub/c.txt in the LLB)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "b.log").write_bytes(b"beta\n")
    (src / "sub" / "c.txt").write_bytes(b"gamma\n")
    os.symlink("../a.txt", src / "sub" / "link")
    return src


def vertex_names(result: Replayed) -> set[str]:
    return {v.name for s in result.replies.get(CONTROL + "Status", []) for v in s.vertexes}


def check_sent(streams: Sequence[Recorded], path: str) -> Any:
    """The decoded request buildctl sent on ``path`` (checked to re-encode byte for byte)."""
    from bkcore.api.codec import GoCodec, decode

    st = next(s for s in streams if s.path == path)
    request_type, _ = types(path)
    msg = decode(st.sent[0], request_type)
    assert GoCodec().encode(msg, request_type) == st.sent[0]
    return msg


# -- the scenarios ----------------------------------------------------------------------------


def test_raw_llb_with_local_secret_mount_and_env_to_local_output(
    daemon: Daemon, source: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """``buildctl build --local src=.. --local rootfs=.. --secret id=x,src=..
    --output type=local,dest=..`` of an exec reading the secret as a mount and as env."""
    from bkcore.sessions.filesync.filesend import FileSendTarget
    from bkcore.sessions.filesync.provider import FileSyncProvider
    from bkcore.sessions.secrets.provider import SecretsProvider

    streams = load("llb_local_secret")
    solve = check_sent(streams, CONTROL + "Solve")
    assert solve.exporter == "local" and not solve.definition.def_ and solve.session
    assert "dest" not in solve.exporter_attrs  # buildctl keeps it on its side
    bridge = check_sent(streams, BRIDGE + "Solve")
    assert bridge.definition.def_ and not bridge.frontend
    out = tmp_path / "out"
    got = replay(
        daemon.address,
        streams,
        [
            FileSyncProvider({"src": str(source), "rootfs": str(busybox_rootfs)}),
            SecretsProvider({"x": SECRET}),
            FileSendTarget(dest_dir=str(out)),
        ],
    )
    assert got.one(CONTROL + "ListWorkers").record
    pong = got.one(BRIDGE + "Ping")
    assert {"solve.base", "return", "readfile"} <= {c.id for c in pong.frontend_api_caps}
    assert got.one(BRIDGE + "Solve").result.ref.id
    got.one(BRIDGE + "Return")
    got.one(CONTROL + "Solve")
    files = tree(out)
    assert files["secret"][1] == SECRET
    assert files["env"][1] == SECRET.rstrip(b"\n") + b"\n"
    assert files["id"][1].startswith(b"uid=0(root) gid=0(root)")
    assert files["src/a.txt"][1] == b"alpha\n" and files["src/b.log"][1] == b"beta\n"
    assert files["src/sub/link"][1] == b"../a.txt"
    assert any(n.startswith("/bin/sh -c mkdir -p /out") for n in vertex_names(got))
    assert "exporting to client directory" in vertex_names(got)
    # the build copied the secret into its result on purpose; the mount itself is in no
    # snapshot of the daemon's store (only its empty mount point)
    stubs = [p for p in daemon.root.rglob("x") if p.parent.name == "secrets"]
    assert all(p.stat().st_size == 0 for p in stubs)


def test_raw_llb_with_local_patterns_to_tar_and_oci_outputs(
    daemon: Daemon, source: Path, tmp_path: Path
) -> None:
    """``--local src=..`` (include *.txt + sub, exclude sub/c.txt, shared key hint) copied
    into scratch, ``--output type=tar,dest=FILE`` and ``--output type=oci,dest=-``."""
    from bkcore.api.codec import decode
    from bkcore.llb.pb import Definition, Op
    from bkcore.sessions.filesync.filesend import FileSendTarget
    from bkcore.sessions.filesync.provider import FileSyncProvider

    tar_streams = load("llb_tar")
    bridge = check_sent(tar_streams, BRIDGE + "Solve")
    ops = [decode(d, Op) for d in Definition().parse(bytes(bridge.definition)).def_]
    attrs = next(o.source.attrs for o in ops if o.source is not None)
    assert json.loads(attrs["local.includepattern"]) == ["*.txt", "sub"]
    assert json.loads(attrs["local.excludepatterns"]) == ["sub/c.txt"]
    assert attrs["local.sharedkeyhint"] == "src"

    out_tar = tmp_path / "out.tar"
    got = replay(
        daemon.address,
        tar_streams,
        [FileSyncProvider({"src": str(source)}), FileSendTarget(file=str(out_tar))],
    )
    got.one(CONTROL + "Solve")
    with tarfile.open(out_tar) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert sorted(members) == ["out", "out/a.txt", "out/made.txt", "out/sub", "out/sub/link"]
        made = tf.extractfile(members["out/made.txt"])
        assert made is not None and made.read() == b"made"
        assert members["out/made.txt"].mode == 0o600
        assert members["out/sub/link"].linkname == "../a.txt"

    oci_streams = load("llb_oci")
    assert check_sent(oci_streams, CONTROL + "Solve").exporter == "oci"
    out_oci = tmp_path / "out.oci.tar"
    got = replay(
        daemon.address,
        oci_streams,
        [FileSyncProvider({"src": str(source)}), FileSendTarget(file=str(out_oci))],
    )
    response = got.one(CONTROL + "Solve")
    digest = response.exporter_response["containerimage.digest"]
    with tarfile.open(out_oci) as tf:
        names = set(tf.getnames())
        assert {"oci-layout", "index.json", "manifest.json"} <= names

        def blob(d: str) -> bytes:
            f = tf.extractfile("blobs/sha256/" + d.removeprefix("sha256:"))
            assert f is not None
            data = f.read()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == d
            return data

        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
        assert [m["digest"] for m in index["manifests"]] == [digest]
        manifest = json.loads(blob(digest))
        config = json.loads(blob(manifest["config"]["digest"]))
        assert config["os"] == "linux" and len(config["rootfs"]["diff_ids"]) == 2
        layer_files: set[str] = set()
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"]))) as lt:
                layer_files |= set(lt.getnames())
        assert {"out/a.txt", "out/made.txt", "out/sub/link"} <= layer_files


def test_dockerfile_frontend_with_target_and_build_args(
    daemon: Daemon, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """``buildctl build --frontend dockerfile.v0 --opt target=out --opt build-arg:NAME=there
    --opt build-arg:OTHER=x --opt context:busybox=local:rootfs --output type=local``."""
    from bkcore.sessions.filesync.filesend import FileSendTarget
    from bkcore.sessions.filesync.provider import FileSyncProvider

    streams = load("df_args")
    bridge = check_sent(streams, BRIDGE + "Solve")
    assert bridge.frontend == "dockerfile.v0"
    assert bridge.frontend_opt["target"] == "out"
    assert bridge.frontend_opt["build-arg:NAME"] == "there"
    assert bridge.frontend_opt["build-arg:OTHER"] == "x"
    assert bridge.frontend_opt["context:busybox"] == "local:rootfs"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS base\nARG NAME=world\nARG OTHER\nWORKDIR /work\nCOPY hello.txt .\n"
        'RUN echo "hi $NAME $OTHER" > greet.txt && cat hello.txt >> greet.txt\n\n'
        "FROM scratch AS out\nCOPY --from=base /work/greet.txt /\n\n"
        "FROM out AS never\nCOPY --from=base /bin/busybox /\n"
    )
    out = tmp_path / "out"
    got = replay(
        daemon.address,
        streams,
        [
            FileSyncProvider(
                {"context": str(ctx), "dockerfile": str(ctx), "rootfs": str(busybox_rootfs)}
            ),
            FileSendTarget(dest_dir=str(out)),
        ],
    )
    got.one(CONTROL + "Solve")
    assert tree(out) == {"greet.txt": (0o100644, b"hi there x\nhello\n")}
    names = vertex_names(got)
    assert "[internal] load build definition from Dockerfile" in names
    assert any("RUN echo" in n for n in names)


def test_failing_run_error_as_buildctl_reads_it(
    daemon: Daemon, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """A Dockerfile RUN exiting 5: the bridge Solve fails with buildkitd's wording and the
    Dockerfile in the Source detail (buildctl prints its snippet from it); buildctl Returns
    the error and the Control.Solve fails with the same status and message."""
    import base64

    from bkcore.api import errors as apierr
    from bkcore.sessions.filesync.provider import FileSyncProvider

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    dockerfile = b"FROM busybox\nARG X=1\nRUN echo hello $X && exit 5\nRUN true\n"
    (ctx / "Dockerfile").write_bytes(dockerfile)
    streams = load("df_fail")
    message = (
        'process "/bin/sh -c echo hello $X && exit 5" did not complete successfully: exit code: 5'
    )
    recorded = next(s for s in streams if s.path == BRIDGE + "Solve").trailers
    assert recorded["grpc-status"] == "2" and recorded["grpc-message"] == message
    got = replay(
        daemon.address,
        streams,
        [
            FileSyncProvider(
                {"context": str(ctx), "dockerfile": str(ctx), "rootfs": str(busybox_rootfs)}
            )
        ],
    )
    live = got.errors[BRIDGE + "Solve"]
    assert (int(live.status.value), live.message) == (2, message)
    found = {d.type_url: json.loads(d.value) for d in live.details}
    source = found[apierr.SOURCE]
    assert base64.b64decode(source["info"]["data"]) == dockerfile
    assert source["ranges"][0]["start"]["line"] == 3
    assert found[apierr.EXIT_MESSAGE] == {"Code": 5}
    assert apierr.VERTEX in found
    got.one(BRIDGE + "Return")  # the recorded error, accepted
    solve = got.errors[CONTROL + "Solve"]
    assert (int(solve.status.value), solve.message) == (2, message)


def test_du_and_prune_as_buildctl_sends_them(daemon: Daemon, source: Path, tmp_path: Path) -> None:
    """``du -v --filter type==source.local``, ``prune --keep-duration 1h --filter
    type==regular`` and ``prune --all --verbose`` after a build."""
    from bkcore.sessions.filesync.filesend import FileSendTarget
    from bkcore.sessions.filesync.provider import FileSyncProvider

    du_streams = load("du")
    assert list(check_sent(du_streams, CONTROL + "DiskUsage").filter) == ["type==source.local"]
    keep_streams = load("prune_keep")
    keep = check_sent(keep_streams, CONTROL + "Prune")
    assert (keep.keep_duration, list(keep.filter), keep.all) == (
        3600 * 10**9,
        ["type==regular"],
        False,
    )
    all_streams = load("prune_all")
    everything = check_sent(all_streams, CONTROL + "Prune")
    assert everything.all and not everything.filter

    empty = replay(daemon.address, du_streams, []).one(CONTROL + "DiskUsage")
    assert list(empty.record) == []
    built = replay(
        daemon.address,
        load("llb_tar"),
        [FileSyncProvider({"src": str(source)}), FileSendTarget(file=str(tmp_path / "o.tar"))],
    )
    built.one(CONTROL + "Solve")
    usage = replay(daemon.address, du_streams, []).one(CONTROL + "DiskUsage")
    assert usage.record and {r.record_type for r in usage.record} == {"source.local"}
    assert all(r.size > 0 and r.id and not r.in_use for r in usage.record)
    # everything is younger than an hour: nothing goes
    kept = replay(daemon.address, keep_streams, [])
    assert CONTROL + "Prune" not in kept.errors
    assert kept.replies.get(CONTROL + "Prune", []) == []
    pruned = replay(daemon.address, all_streams, [])
    assert CONTROL + "Prune" not in pruned.errors
    removed = {r.id for r in pruned.replies[CONTROL + "Prune"]}
    assert {r.id for r in usage.record} <= removed
    after = replay(daemon.address, du_streams, []).one(CONTROL + "DiskUsage")
    assert list(after.record) == []


def test_go_llb_with_secret_env_ssh_and_patterns(
    daemon: Daemon, source: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """A definition marshalled by BuildKit's own Go ``client/llb`` (llb_go.def: local sources
    with include/exclude patterns and a shared key hint, a secret as a file and as env
    ``SENV``, the default SSH agent socket, a read-only bind, copy and mkfile), sent by
    ``buildctl build --local src --local rootfs --secret id=x --ssh default
    --output type=local``."""
    import socket

    from bkcore.sessions.filesync.filesend import FileSendTarget
    from bkcore.sessions.filesync.provider import FileSyncProvider
    from bkcore.sessions.secrets.provider import SecretsProvider
    from bkcore.sessions.sshforward.agent import SSHProvider

    streams = load("llb_go")
    bridge = check_sent(streams, BRIDGE + "Solve")
    from bkcore.llb.digest import marshal

    assert marshal(bridge.definition) == (DATA / "llb_go.def").read_bytes()
    agent_dir = Path(tempfile_dir())
    agent = socket.socket(socket.AF_UNIX)
    agent.bind(str(agent_dir / "agent.sock"))
    agent.listen()
    out = tmp_path / "out"
    try:
        got = replay(
            daemon.address,
            streams,
            [
                FileSyncProvider({"src": str(source), "rootfs": str(busybox_rootfs)}),
                SecretsProvider({"x": SECRET}),
                SSHProvider({"default": str(agent_dir / "agent.sock")}),
                FileSendTarget(dest_dir=str(out)),
            ],
        )
    finally:
        agent.close()
        import shutil

        shutil.rmtree(agent_dir, ignore_errors=True)
    got.one(CONTROL + "Solve")
    files = tree(out)
    assert files["secret"][1] == SECRET and files["env"][1] == SECRET
    assert files["made.txt"] == (0o100600, b"made")
    # the include/exclude patterns: a.txt and sub/ (without c.txt), not b.log
    assert sorted(k for k in files if k.startswith("src/")) == [
        "src/a.txt",
        "src/sub",
        "src/sub/link",
    ]
    assert files["ssh"][1].startswith(b"s") and b"/run/buildkit/ssh_agent.0" in files["ssh"][1]


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="bkio-agent-", dir="/tmp")


def test_dockerfile_parse_error_as_buildctl_reads_it(daemon: Daemon, tmp_path: Path) -> None:
    """A Dockerfile with an unknown instruction on line 3: the message buildkitd sends
    (buildctl prints 'failed to solve: ' + it) and the Dockerfile in the Source detail, from
    which buildctl draws the same snippet as against buildkitd."""
    import base64

    from bkcore.api import errors as apierr
    from bkcore.sessions.filesync.provider import FileSyncProvider

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    dockerfile = b"FROM busybox\nRUN echo hi\nFOO bar\nRUN true\n"
    (ctx / "Dockerfile").write_bytes(dockerfile)
    message = "dockerfile parse error on line 3: unknown instruction: FOO (did you mean FROM?)"
    got = replay(
        daemon.address,
        load("df_parse"),
        [FileSyncProvider({"context": str(ctx), "dockerfile": str(ctx)})],
    )
    live = got.errors[BRIDGE + "Solve"]
    assert (int(live.status.value), live.message) == (2, message)
    found = {d.type_url: json.loads(d.value) for d in live.details}
    source = found[apierr.SOURCE]
    assert base64.b64decode(source["info"]["data"]) == dockerfile
    assert source["info"]["filename"] == "Dockerfile"
    assert source["ranges"] == [{"start": {"line": 3}, "end": {"line": 3}}]
    solve = got.errors[CONTROL + "Solve"]
    assert (int(solve.status.value), solve.message) == (2, message)


def _running(argv: bytes) -> list[int]:
    """Pids whose command line is ``argv`` (NUL-separated)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if proc.joinpath("cmdline").read_bytes().rstrip(b"\0") == argv:
                    out.append(int(proc.name))
            except OSError:
                continue
    return out


def test_ctrl_c_of_buildctl_mid_run_cancels_the_build_and_the_daemon_serves_on(
    daemon: Daemon, busybox_rootfs: Path
) -> None:
    """buildctl Ctrl-C'd while its RUN (``sleep 47``) runs (cancel.json: the forwarded
    build's LLBBridge Solve is in flight, no Return comes): when the client goes away the
    daemon cancels the build -- the process is gone -- and serves the next client."""
    from bkcore.sessions.filesync.provider import FileSyncProvider

    sleeper = b"sleep\x0047"
    assert not _running(sleeper)
    streams = load("cancel")
    assert [s.path for s in streams if s.path == BRIDGE + "Return"] == []

    async def go() -> None:
        task = asyncio.ensure_future(
            _replay(daemon.address, streams, [FileSyncProvider({"rootfs": str(busybox_rootfs)})])
        )
        deadline = time.monotonic() + 120
        while not _running(sleeper):
            assert not task.done(), task.result()
            assert time.monotonic() < deadline, "the RUN never started"
            await asyncio.sleep(0.05)
        task.cancel()  # buildctl's Ctrl-C: its streams and connection go away
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    deadline = time.monotonic() + 60
    while _running(sleeper):
        assert time.monotonic() < deadline, "the cancelled RUN is still running"
        time.sleep(0.05)
    after = replay(daemon.address, load("du"), [])
    assert CONTROL + "DiskUsage" not in after.errors
    assert daemon.proc.poll() is None
    # runc keeps no container of it
    for state in daemon.root.rglob("runc"):
        if state.is_dir() and (state.parent / "bundles").is_dir():
            listed = subprocess.run(
                ["runc", "--root", str(state), "list", "-q"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert listed.stdout.split() == []


def test_invalid_llb_error_is_said_once(daemon: Daemon) -> None:
    """Raw LLB whose only op names an input the definition lacks: the bridge Solve is
    INVALID_ARGUMENT naming the op; buildctl Returns it as 'InvalidArgument: <message>' (Go
    puts the code in front) and the Control.Solve fails with the code and the message once
    (buildctl prints 'failed to solve: InvalidArgument: invalid LLB ...')."""
    streams = load("dangling")
    (returned,) = [s for s in streams if s.path == BRIDGE + "Return"]
    assert b"InvalidArgument: invalid LLB with 1 vertexes" in returned.sent[0]
    got = replay(daemon.address, streams, [])
    live = got.errors[BRIDGE + "Solve"]
    assert live.status.name == "INVALID_ARGUMENT"
    assert (live.message or "").startswith("invalid LLB with 1 vertexes (op sha256:")
    solve = got.errors[CONTROL + "Solve"]
    assert solve.status.name == "INVALID_ARGUMENT"
    assert solve.message == live.message
