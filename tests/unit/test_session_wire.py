"""The state machines work when every message is encoded to protobuf bytes and decoded again,
as a gRPC transport will do (Handler types drive the codec): full sync, change tokens and
hash checks, secrets, ssh, FileSend."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bkcore.session import Handler, InProcessCaller, Metadata, ServerStream, Session
from bkcore.session.filesync import send_dir_to_client, sync_dir
from bkcore.session.filesync.walker import RACY_NS
from bkcore.session.secrets import get_secret
from bkcore.sessions.filesync import FileSendTarget, FileSyncProvider
from bkcore.sessions.secrets import SecretsProvider


def roundtrip(msg: Any, kind: type[Any]) -> Any:
    data = bytes(msg)
    assert isinstance(data, bytes)
    return kind.FromString(data)


class _EncodedServerStream:
    def __init__(self, inner: ServerStream, handler: Handler) -> None:
        self._inner = inner
        self._h = handler

    @property
    def metadata(self) -> Metadata:
        return self._inner.metadata

    async def recv(self) -> Any | None:
        msg = await self._inner.recv()
        return None if msg is None else roundtrip(msg, self._h.request_type)

    async def send(self, message: Any) -> None:
        await self._inner.send(roundtrip(message, self._h.response_type))


def wire_caller(session: Session) -> InProcessCaller:
    """An in-process caller whose handlers only ever see decoded wire bytes."""
    wrapped: dict[str, Handler] = {}
    for method, h in session.handlers().items():
        if h.kind == "unary":

            async def unary(req: Any, md: Metadata, h: Handler = h) -> Any:
                resp = await h.func(roundtrip(req, h.request_type), md)  # type: ignore[call-arg]
                return roundtrip(resp, h.response_type)

            wrapped[method] = Handler("unary", unary, h.request_type, h.response_type)
        else:

            async def stream(st: ServerStream, h: Handler = h) -> None:
                await h.func(_EncodedServerStream(st, h))  # type: ignore[call-arg]

            wrapped[method] = Handler("stream", stream, h.request_type, h.response_type)
    return InProcessCaller(wrapped)


def _handlers_of(*attachables: Any) -> Session:
    s = Session()
    for a in attachables:
        s.allow(a)
    return s


def test_sync_with_tokens_and_hash_checks_over_encoded_messages(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"one")
    (src / "g").write_bytes(os.urandom(100_000))
    os.symlink("d/f", src / "l")
    os.setxattr(src / "g", "user.x", b"1")
    time.sleep(RACY_NS / 1e9 + 0.01)
    caller = wire_caller(_handlers_of(FileSyncProvider({"ctx": str(src)})))
    first = asyncio.run(sync_dir(caller, "ctx", str(dst)))
    assert first.files_received == 2
    assert (dst / "g").read_bytes() == (src / "g").read_bytes()
    assert os.getxattr(dst / "g", "user.x") == b"1"
    assert asyncio.run(sync_dir(caller, "ctx", str(dst))).hash_checks == 0  # tokens survived
    mtime = (src / "d" / "f").stat().st_mtime_ns
    (src / "d" / "f").write_bytes(b"two")
    os.utime(src / "d" / "f", ns=(mtime, mtime))
    time.sleep(RACY_NS / 1e9 + 0.01)
    res = asyncio.run(sync_dir(caller, "ctx", str(dst)))
    assert (res.hash_checks, res.files_received) == (1, 1)  # HASH packet survived too
    assert (dst / "d" / "f").read_bytes() == b"two"


def test_secrets_and_filesend_over_encoded_messages(tmp_path: Path) -> None:
    rootfs, out = tmp_path / "rootfs", tmp_path / "out"
    rootfs.mkdir()
    (rootfs / "hello").write_bytes(b"hi\n")
    target = FileSendTarget(dest_dir=str(out))
    caller = wire_caller(_handlers_of(SecretsProvider({"s": b"v\n"}), target))

    async def main() -> bytes:
        await send_dir_to_client(caller, str(rootfs))
        return await get_secret(caller, "s")

    assert asyncio.run(main()) == b"v\n"
    assert (out / "hello").read_bytes() == b"hi\n"


def test_every_served_method_declares_wire_types() -> None:
    from bkcore.sessions.sshforward import SSHProvider

    s = _handlers_of(
        FileSyncProvider({"a": "."}),
        SecretsProvider({}),
        SSHProvider({"default": "/x"}),
        FileSendTarget(file="/tmp/x"),
    )
    handlers: Mapping[str, Handler] = s.handlers()
    assert set(handlers) == {
        "/grpc.health.v1.Health/Check",
        "/moby.filesync.v1.FileSync/DiffCopy",
        "/moby.filesync.v1.FileSend/DiffCopy",
        "/moby.buildkit.secrets.v1.Secrets/GetSecret",
        "/moby.sshforward.v1.SSH/CheckAgent",
        "/moby.sshforward.v1.SSH/ForwardAgent",
    }
    for h in handlers.values():
        # each type can encode a default message and decode it back
        assert roundtrip(h.request_type(), h.request_type) is not None
        assert roundtrip(h.response_type(), h.response_type) is not None
