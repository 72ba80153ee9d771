"""The session tunnel's send path: messages queued on one inner stream are written together,
several tasks may send on one stream at once without mixing their bytes, and both ends of
the outer connection accept 1 MiB frames."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import struct
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from bkcore.session import Caller, Session, SessionManager
from bkcore.session.filesync.packets import BytesMessage, Packet, PacketType
from bkcore.session.transport import Handler, ServerStream

METHOD = "/bkcore.test.v1.Burst/Exchange"
TASKS = 16
PER_TASK = 6


def payload(task: int, seq: int) -> bytes:
    """20 KiB to ~900 KiB: 6 x 12 of them are far past the 4 MiB flow-control windows, so
    writes stop in the middle of messages."""
    head = struct.pack(">II", task, seq)
    size = 20_000 + ((task * 7919 + seq * 104_729) % 880_000)
    return head + bytes([(task * 31 + seq) % 251]) * (size - len(head))


def check(received: list[bytes]) -> None:
    """Every message intact, and each task's messages in the order it sent them."""
    assert len(received) == TASKS * PER_TASK
    nxt = dict.fromkeys(range(TASKS), 0)
    for data in received:
        task, seq = struct.unpack(">II", data[:8])
        assert data == payload(task, seq)
        assert seq == nxt[task]
        nxt[task] += 1


async def send_concurrently(send: Any) -> None:
    async def one(task: int) -> None:
        for seq in range(PER_TASK):
            await send(BytesMessage(payload(task, seq)))
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        for task in range(TASKS):
            tg.create_task(one(task))


class Burst:
    """Client-side attachable: reads everything the daemon sends, then answers with bursts
    from several tasks at once."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def handlers(self) -> Mapping[str, Handler]:
        return {METHOD: Handler("stream", self._exchange, BytesMessage, BytesMessage)}

    async def _exchange(self, stream: ServerStream) -> None:
        while (msg := await stream.recv()) is not None:
            self.received.append(msg.data)
        await send_concurrently(stream.send)


@asynccontextmanager
async def tunnel(session: Session) -> AsyncIterator[tuple[Caller, Any]]:
    from grpclib.client import Channel
    from grpclib.server import Server

    from bkcore.api.codec import GoCodec
    from bkcore.session.grpc_transport import SessionService, attach_session

    sockdir = tempfile.mkdtemp(prefix="d6perf", dir="/tmp")
    manager = SessionManager()
    server = Server([SessionService(manager)], codec=GoCodec())
    await server.start(path=os.path.join(sockdir, "s"))
    channel = Channel(path=os.path.join(sockdir, "s"), codec=GoCodec())
    try:
        async with attach_session(channel, session):
            yield (await manager.get(session.id)).caller, channel
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
        shutil.rmtree(sockdir)


def test_concurrent_senders_on_one_stream_both_ways(monkeypatch: Any) -> None:
    from bkcore.session import grpc_transport

    # pause the inner connections often (as a slow outer stream does): writers then wait in
    # the middle of their messages
    monkeypatch.setattr(grpc_transport, "_HIGH_WATER", 48 * 1024)
    burst = Burst()
    session = Session()
    session.allow(burst)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with tunnel(session) as (caller, _):
            async with caller.open_stream(METHOD, BytesMessage) as st:
                await send_concurrently(st.send)
                await st.end()
                while (msg := await st.recv()) is not None:
                    got.append(msg.data)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert left == []
        return got

    got = asyncio.run(main())
    check(burst.received)  # daemon -> client
    check(got)  # client -> daemon


def test_outer_connection_accepts_large_frames() -> None:
    from bkcore.session.grpc_transport import TUNNEL_CHUNK

    session = Session()
    session.allow(Burst())

    async def main() -> tuple[int, int]:
        async with tunnel(session) as (caller, channel):
            async with caller.open_stream(METHOD, BytesMessage) as st:
                await st.send(BytesMessage(b"x"))
                await st.end()
                while await st.recv() is not None:
                    pass
            h2conn = channel._protocol.connection._connection
            return h2conn.local_settings.max_frame_size, h2conn.remote_settings.max_frame_size

    local, remote = asyncio.run(main())
    assert local == TUNNEL_CHUNK  # the client accepts 1 MiB frames from the daemon
    assert remote == TUNNEL_CHUNK  # and the daemon from the client


class FakeH2Stream:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send_data(self, data: bytes, end_stream: bool = False) -> None:
        self.writes.append(bytes(data))
        await asyncio.sleep(0)


class FakeGrpcStream:
    def __init__(self) -> None:
        from bkcore.session.grpc_transport import _make_codec

        self._stream = FakeH2Stream()
        self._codec = _make_codec()


def grpc_framed(msg: Any) -> bytes:
    data = bytes(msg)
    return b"\x00" + struct.pack(">I", len(data)) + data


def test_outbox_writes_a_burst_as_few_frames_in_order() -> None:
    from bkcore.session.grpc_transport import _Outbox

    packets = [Packet(PacketType.DATA, id=i, data=b"x" * (i % 7)) for i in range(2000)]

    async def main() -> list[bytes]:
        fake = FakeGrpcStream()
        box = _Outbox(fake, fake._codec)
        for p in packets:  # one producer that never yields between sends
            await box.send(p)
        await box.drain()
        await box.close()
        return fake._stream.writes

    writes = asyncio.run(main())
    assert len(writes) == 1  # one HTTP/2 write instead of 2000
    assert b"".join(writes) == b"".join(grpc_framed(p) for p in packets)


def test_outbox_bounds_what_it_holds_and_reports_write_errors() -> None:
    import pytest

    from bkcore.session.grpc_transport import _OUTBOX_HIGH, _Outbox

    class Failing(FakeH2Stream):
        async def send_data(self, data: bytes, end_stream: bool = False) -> None:
            await super().send_data(data)
            if len(self.writes) == 2:
                raise ConnectionResetError("reset by peer")

    big = BytesMessage(b"y" * (256 * 1024))

    async def main() -> tuple[int, list[bytes]]:
        fake = FakeGrpcStream()
        fake._stream = Failing()
        box = _Outbox(fake, fake._codec)
        held = 0
        with pytest.raises(ConnectionResetError):
            for _ in range(64):
                await box.send(big)
                held = max(held, box._size)
        await box.close()
        return held, fake._stream.writes

    held, writes = asyncio.run(main())
    assert held <= _OUTBOX_HIGH + len(bytes(big)) + 5
    assert len(writes) == 2


class FakeRecvStream:
    """A grpclib stream as the inbox sees it: ``_stream.buffer`` is grpclib's own Buffer."""

    def __init__(self) -> None:
        from grpclib.protocol import Buffer

        self.acked: list[int] = []
        self._stream = type("S", (), {})()
        self._stream.buffer = Buffer(self.acked.append)


def test_inbox_cuts_messages_across_frames_and_acks_each_frame() -> None:
    from bkcore.session.grpc_transport import _Inbox, _make_codec

    packets = [Packet(PacketType.DATA, id=i, data=os.urandom(i * 37 % 5000)) for i in range(300)]
    wire = b"".join(grpc_framed(p) for p in packets)
    cuts = [0, 3, 4, 5, 1000, 1001, 77_000, len(wire) - 2, len(wire)]  # frames of any size

    async def main() -> list[Any]:
        fake = FakeRecvStream()
        buf = fake._stream.buffer
        for a, b in itertools.pairwise(cuts):
            buf.add(wire[a:b], b - a)
        buf.add(b"", 0)  # an empty DATA frame is not the end
        buf.eof()
        inbox = _Inbox(fake, _make_codec(), Packet)
        got = []
        while (msg := await inbox.recv()) is not None:
            got.append(msg)
        assert sum(fake.acked) == len(wire)
        return got

    assert asyncio.run(main()) == packets


def test_inbox_refuses_an_oversized_message_before_its_bytes_arrive() -> None:
    import pytest
    from grpclib.const import Status as GStatus
    from grpclib.exceptions import GRPCError

    from bkcore.session.grpc_transport import MAX_MESSAGE_SIZE, _Inbox, _make_codec

    async def main() -> None:
        fake = FakeRecvStream()
        head = b"\x00" + struct.pack(">I", MAX_MESSAGE_SIZE + 1) + b"x" * 100
        fake._stream.buffer.add(head, len(head))  # the rest never comes
        inbox = _Inbox(fake, _make_codec(), Packet)
        with pytest.raises(GRPCError) as info:
            await inbox.recv()
        assert info.value.status == GStatus.RESOURCE_EXHAUSTED

        fake = FakeRecvStream()
        cut = grpc_framed(Packet(PacketType.DATA, id=1, data=b"abc"))[:-1]
        fake._stream.buffer.add(cut, len(cut))
        fake._stream.buffer.eof()
        with pytest.raises(Exception, match="ended inside a message"):
            await _Inbox(fake, _make_codec(), Packet).recv()

    asyncio.run(main())
