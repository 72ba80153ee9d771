"""Session contract: the attachable behaviours (file sync, incremental re-sync, patterns,
hostile listings, file send, secrets, ssh, auth, error codes) hold over BOTH the in-process
transport and the ``Control.Session`` gRPC tunnel (a grpclib server on a unix socket hosting
only Control.Session, a grpclib client channel serving the Session inside the tunnel)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import betterproto
import pytest

from bkcore.errors import SessionError
from bkcore.session import (
    Caller,
    CallError,
    Handler,
    Metadata,
    ServerStream,
    Session,
    SessionManager,
    Status,
)
from bkcore.session.auth import CREDENTIALS, CredentialsRequest, CredentialsResponse
from bkcore.session.filesync import (
    DIFFCOPY,
    send_dir_to_client,
    send_file_to_client,
    sync_dir,
)
from bkcore.session.filesync.packets import GO_SYMLINK, Packet, PacketType, Stat
from bkcore.session.filesync.walker import RACY_NS
from bkcore.session.secrets import SecretNotFoundError, get_secret
from bkcore.session.sshforward import forward_agent
from bkcore.sessions.auth.provider import AuthProvider
from bkcore.sessions.filesync import FileSendTarget, FileSyncProvider
from bkcore.sessions.secrets import SecretsProvider, parse_secret_spec
from bkcore.sessions.sshforward import SSHProvider

T = TypeVar("T")
TRANSPORTS = ["inprocess", "grpc"]


@asynccontextmanager
async def grpc_connected(session: Session) -> AsyncIterator[tuple[Caller, SessionManager]]:
    """A daemon-side Caller for ``session`` through a real Control.Session stream."""
    from grpclib.client import Channel
    from grpclib.server import Server

    from bkcore.api.codec import GoCodec
    from bkcore.session.grpc_transport import SessionService, attach_session

    sockdir = tempfile.mkdtemp(prefix="d6s", dir="/tmp")
    manager = SessionManager()
    server = Server([SessionService(manager)], codec=GoCodec())
    await server.start(path=os.path.join(sockdir, "s"))
    channel = Channel(path=os.path.join(sockdir, "s"), codec=GoCodec())
    try:
        async with attach_session(channel, session):
            conn = await manager.get(session.id)
            yield conn.caller, manager
        assert manager.ids() == []  # the half-close ended the session on the daemon
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
        shutil.rmtree(sockdir)


def run(transport: str, session: Session, fn: Callable[[Caller], Awaitable[T]]) -> T:
    """Run ``fn`` with a daemon-side caller of ``session`` over ``transport``; afterwards no
    task is left behind."""

    async def main() -> T:
        if transport == "inprocess":
            result = await fn(session.caller())
        else:
            async with grpc_connected(session) as (caller, _):
                result = await fn(caller)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert left == []
        return result

    return asyncio.run(main())


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def session_of(*attachables: Any) -> Session:
    s = Session(name="contract")
    for a in attachables:
        s.allow(a)
    return s


# -- file sync -------------------------------------------------------------------------------


def make_tree(root: Path) -> None:
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "exec.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "exec.sh", 0o755)
    (root / "dir" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "dir" / "sub" / "c.txt").write_bytes(b"c" * 10)
    (root / "skip.log").write_bytes(b"log")
    os.symlink("../a.txt", root / "dir" / "link")
    os.link(root / "a.txt", root / "dir" / "hard")
    os.setxattr(root / "dir" / "sub" / "c.txt", "user.origin", b"test")
    old = 1_600_000_000_000_000_000
    for p in root.rglob("*"):
        os.utime(p, ns=(old, old), follow_symlinks=False)
    time.sleep(RACY_NS / 1e9 + 0.01)


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        s = p.lstat()
        rel = str(p.relative_to(root))
        if stat.S_ISLNK(s.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISDIR(s.st_mode):
            out[rel] = ("dir", stat.S_IMODE(s.st_mode), s.st_mtime_ns)
        else:
            xattrs = {k: os.getxattr(p, k) for k in os.listxattr(p)}
            out[rel] = ("file", stat.S_IMODE(s.st_mode), s.st_mtime_ns, p.read_bytes(), xattrs)
    return out


def test_sync_then_incremental_resync(tmp_path: Path, transport: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    session = session_of(FileSyncProvider({"ctx": str(src)}))
    first = run(transport, session, lambda c: sync_dir(c, "ctx", str(dst)))
    assert snapshot(dst) == snapshot(src)
    assert (dst / "a.txt").stat().st_ino == (dst / "dir" / "hard").stat().st_ino
    assert first.files_received == 5
    assert first.bytes_received == 6 + 10 + 300_000 + 10 + 3
    again = run(transport, session, lambda c: sync_dir(c, "ctx", str(dst)))
    assert again.files_received == 0
    os.utime(src / "dir" / "sub" / "c.txt", ns=(1_700_000_000_000_000_000,) * 2)
    third = run(transport, session, lambda c: sync_dir(c, "ctx", str(dst)))
    assert third.changed == {"dir/sub/c.txt"} and third.bytes_received == 10
    assert snapshot(dst) == snapshot(src)


def test_sync_patterns_travel_as_metadata(tmp_path: Path, transport: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    session = session_of(FileSyncProvider({"ctx": str(src)}))
    run(
        transport,
        session,
        lambda c: sync_dir(c, "ctx", str(dst), includes=["dir", "*.log"], excludes=["dir/sub"]),
    )
    got = sorted(str(p.relative_to(dst)) for p in dst.rglob("*"))
    assert got == ["dir", "dir/b.bin", "dir/hard", "dir/link", "skip.log"]


def test_big_file_crosses_the_size_limits(tmp_path: Path, transport: str) -> None:
    """9 MiB file: more than the 4 MiB message limit and the 1 MiB tunnel chunk."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = os.urandom(9 << 20)
    (src / "big").write_bytes(data)
    session = session_of(FileSyncProvider({"ctx": str(src)}))
    res = run(transport, session, lambda c: sync_dir(c, "ctx", str(dst)))
    assert res.bytes_received == len(data)
    assert (dst / "big").read_bytes() == data


def test_unknown_dir_is_refused(tmp_path: Path, transport: str) -> None:
    session = session_of(FileSyncProvider({"ctx": str(tmp_path)}))
    with pytest.raises(SessionError, match="other"):
        run(transport, session, lambda c: sync_dir(c, "other", str(tmp_path / "dst")))


class ScriptedSender:
    """A hostile FileSync client: a fixed listing, then ``pwned`` for every REQ."""

    def __init__(self, stats: list[Stat]) -> None:
        self.stats = stats

    def handlers(self) -> Mapping[str, Handler]:
        return {DIFFCOPY: Handler("stream", self.run, Packet, Packet)}

    async def run(self, stream: ServerStream) -> None:
        for s in self.stats:
            await stream.send(Packet(PacketType.STAT, stat=s))
        await stream.send(Packet())
        while (p := await stream.recv()) is not None:
            if p.type == PacketType.REQ:
                await stream.send(Packet(PacketType.DATA, id=p.id, data=b"pwned"))
                await stream.send(Packet(PacketType.DATA, id=p.id))
            elif p.type == PacketType.FIN:
                await stream.send(Packet(PacketType.FIN))
                return


@pytest.mark.parametrize(
    "stats",
    [
        [Stat("../escape", 0o644, size=5)],
        [Stat("/abs/escape", 0o644, size=5)],
        [Stat("link", GO_SYMLINK | 0o777, linkname="../out"), Stat("link/escape", 0o644, size=5)],
        [Stat("h", 0o644, linkname="../out/escape")],
    ],
    ids=["dotdot", "absolute", "under-symlink", "hardlink-outside"],
)
def test_path_outside_the_directory_is_refused(
    tmp_path: Path, transport: str, stats: list[Stat]
) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    out.mkdir()
    with pytest.raises(SessionError):
        run(transport, session_of(ScriptedSender(stats)), lambda c: sync_dir(c, "ctx", str(dest)))
    assert list(out.iterdir()) == []
    assert not (tmp_path / "escape").exists()
    assert not any("escape" in str(p) for p in dest.rglob("*"))


# -- file send -------------------------------------------------------------------------------


def test_directory_export(tmp_path: Path, transport: str) -> None:
    rootfs, out = tmp_path / "rootfs", tmp_path / "out"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hosts").write_bytes(b"127.0.0.1 localhost\n")
    (rootfs / "big").write_bytes(os.urandom(5 << 20))
    os.symlink("etc/hosts", rootfs / "h")
    session = session_of(FileSendTarget(dest_dir=str(out)))
    stats = run(transport, session, lambda c: send_dir_to_client(c, str(rootfs)))
    assert stats.files_sent == 2
    assert (out / "big").read_bytes() == (rootfs / "big").read_bytes()
    assert os.readlink(out / "h") == "etc/hosts"


def test_file_export_with_metadata_and_big_chunks(tmp_path: Path, transport: str) -> None:
    out = tmp_path / "image.tar"
    target = FileSendTarget(file=str(out))
    session = session_of(target)
    blob = os.urandom(6 << 20)  # one chunk over the 4 MiB message limit: split on the wire

    async def chunks() -> AsyncIterator[bytes]:
        yield b"head"
        yield blob

    n = run(transport, session, lambda c: send_file_to_client(c, chunks(), {"image.name": "x"}))
    assert n == 4 + len(blob)
    assert out.read_bytes() == b"head" + blob
    assert target.metadata.get("exporter-md-image.name") == "x"

    async def failing() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("exporter crashed")

    out.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        run(transport, session, lambda c: send_file_to_client(c, failing()))
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tar"]


def test_export_without_target_is_refused(tmp_path: Path, transport: str) -> None:
    with pytest.raises(SessionError, match="not supported by the client"):
        run(transport, Session(), lambda c: send_dir_to_client(c, str(tmp_path)))


# -- secrets, auth, ssh ----------------------------------------------------------------------


def test_secrets(tmp_path: Path, transport: str) -> None:
    (tmp_path / "big").write_bytes(b"x" * (500 * 1024 + 1))
    session = session_of(
        SecretsProvider(
            {"raw": b"s3cr3t\n", "big": parse_secret_spec(f"id=big,src={tmp_path / 'big'}")}
        )
    )
    assert run(transport, session, lambda c: get_secret(c, "raw")) == b"s3cr3t\n"
    with pytest.raises(SecretNotFoundError, match="secret absent not found"):
        run(transport, session, lambda c: get_secret(c, "absent"))
    with pytest.raises(SessionError, match="over 500 KiB"):
        run(transport, session, lambda c: get_secret(c, "big"))
    # no Secrets attachable: Unimplemented reads as "not provided"
    with pytest.raises(SecretNotFoundError):
        run(transport, Session(), lambda c: get_secret(c, "raw"))


def test_auth_credentials(tmp_path: Path, transport: str) -> None:
    cfg = tmp_path / "docker"
    cfg.mkdir()
    auth = base64.b64encode(b"alice:pw").decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {"reg.a:5000": {"auth": auth}}}))
    session = session_of(AuthProvider(cfg))

    async def ask(c: Caller) -> list[tuple[str, str]]:
        out = []
        for host in ("reg.a:5000", "unknown.example"):
            r = await c.call_unary(CREDENTIALS, CredentialsRequest(host=host), CredentialsResponse)
            out.append((r.username, r.secret))
        return out

    assert run(transport, session, ask) == [("alice", "pw"), ("", "")]


async def fake_agent(path: str) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(b"agent:" + data)
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path)


def test_ssh_forwarding(tmp_path: Path, transport: str) -> None:
    agent_path = str(tmp_path / "agent.sock")
    session = session_of(SSHProvider({"default": agent_path}))

    async def use(c: Caller) -> list[bytes]:
        server = await fake_agent(agent_path)
        replies = []
        try:
            async with forward_agent(c, "") as path:
                for msg in (b"hello", b"world"):
                    r, w = await asyncio.open_unix_connection(path)
                    w.write(msg)
                    await w.drain()
                    replies.append(await r.readexactly(6 + len(msg)))
                    w.write_eof()
                    assert await r.read() == b""
                    w.close()
                    await w.wait_closed()
        finally:
            server.close()
            await server.wait_closed()
        return replies

    assert run(transport, session, use) == [b"agent:hello", b"agent:world"]

    async def other(c: Caller) -> None:
        async with forward_agent(c, "other"):
            raise AssertionError("must not get here")

    with pytest.raises(SessionError, match="not forwarded"):
        run(transport, session, other)


# -- the Caller contract itself --------------------------------------------------------------


@dataclass(eq=False, repr=False)
class Text(betterproto.Message):
    text: str = betterproto.string_field(1)


class Echo:
    def handlers(self) -> Mapping[str, Handler]:
        return {
            "/test.Echo/Upper": Handler("unary", self.upper, Text, Text),
            "/test.Echo/Chat": Handler("stream", self.chat, Text, Text),
            "/test.Echo/Fail": Handler("stream", self.fail, Text, Text),
        }

    async def upper(self, request: Text, md: Metadata) -> Text:
        if request.text == "missing":
            raise CallError(Status.NOT_FOUND, "nothing here")
        if request.text == "boom":
            raise RuntimeError("exploded\nsecond line")
        if request.text == "huge":
            return Text(text="x" * (5 << 20))
        return Text(text=request.text.upper() + ",".join(md.get_all("suffix")))

    async def chat(self, stream: ServerStream) -> None:
        while (msg := await stream.recv()) is not None:
            await stream.send(Text(text=f"echo:{msg.text}:{stream.metadata.get('k')}"))
        await stream.send(Text(text="bye"))

    async def fail(self, stream: ServerStream) -> None:
        await stream.send(Text(text="first"))
        raise CallError(Status.PERMISSION_DENIED, "go away")


def test_unary_results_and_status_codes(transport: str) -> None:
    async def main(c: Caller) -> list[Any]:
        out: list[Any] = [c.supports("/TEST.echo/upper"), c.supports("/test.Echo/Nope")]
        r = await c.call_unary("/test.Echo/Upper", Text(text="hi"), Text, [("Suffix", "!")])
        out.append(r.text)
        for text, method in [("missing", "Upper"), ("boom", "Upper"), ("x", "Nope")]:
            try:
                await c.call_unary(f"/test.Echo/{method}", Text(text=text), Text)
            except CallError as exc:
                out.append((exc.code, exc.message if exc.code != Status.UNIMPLEMENTED else ""))
        return out

    got = run(transport, session_of(Echo()), main)
    assert got == [
        True,
        False,
        "HI!",
        (Status.NOT_FOUND, "nothing here"),
        (Status.UNKNOWN, "exploded"),
        (Status.UNIMPLEMENTED, ""),
    ]


def test_bidi_stream_and_error_after_messages(transport: str) -> None:
    async def main(c: Caller) -> tuple[list[str], list[str], Status]:
        got = []
        async with c.open_stream("/test.Echo/Chat", Text, [("k", "v")]) as st:
            for word in ("a", "b"):
                await st.send(Text(text=word))
            await st.end()
            while (m := await st.recv()) is not None:
                got.append(m.text)
        failed: list[str] = []
        code = Status.OK
        try:
            async with c.open_stream("/test.Echo/Fail", Text) as st:
                while (m := await st.recv()) is not None:
                    failed.append(m.text)
        except CallError as exc:
            code = exc.code
        return got, failed, code

    got, failed, code = run(transport, session_of(Echo()), main)
    assert got == ["echo:a:v", "echo:b:v", "bye"]
    assert failed == ["first"] and code is Status.PERMISSION_DENIED


def test_oversized_message_is_refused_over_the_wire() -> None:
    async def main(c: Caller) -> Status:
        try:
            await c.call_unary("/test.Echo/Upper", Text(text="huge"), Text)
        except CallError as exc:
            return exc.code
        return Status.OK

    assert run("grpc", session_of(Echo()), main) is Status.RESOURCE_EXHAUSTED
