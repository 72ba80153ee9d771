"""The tunnel against Go's side of the wire, replayed from the buildctl <-> buildkitd v0.11.6
capture (tests/data/vectors/session_capture.json) with a raw HTTP/2 peer (the h2 library):

* client side: a Go-like daemon (raw h2 client) sends the captured GetSecret and CheckAgent
  requests into ``serve_tunnel``; the answers are the captured bytes with grpc-status 0;
* daemon side: a Go-like client (raw h2 server) answers as grpc-go does -- ``trailer:``
  response headers, the message, trailers, then RST_STREAM(NO_ERROR) -- and the daemon's
  ``TunnelCaller`` still gets the message and an OK status; its request is the captured one.
"""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from bkcore.session import Session
from bkcore.session.filesync.packets import Packet
from bkcore.session.grpc_transport import TunnelCaller, _Tunnel, serve_tunnel
from bkcore.session.secrets import get_secret
from bkcore.sessions.secrets import SecretsProvider
from bkcore.sessions.sshforward import SSHProvider

SECRETS_GET = "/moby.buildkit.secrets.v1.Secrets/GetSecret"
DIFFCOPY = "/moby.filesync.v1.FileSync/DiffCopy"
CAPTURE = Path(__file__).parent.parent / "data" / "vectors" / "session_capture.json"


def captured(path: str) -> list[dict[str, Any]]:
    calls = json.loads(CAPTURE.read_text())["inner_calls"]
    for call in calls.values():
        if call["path"] == path:
            return list(call["events"])
    raise AssertionError(path)


def framed(hex_payload: str) -> bytes:
    payload = bytes.fromhex(hex_payload)
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class FakeOuter:
    """The client's end of Control.Session as serve_tunnel uses it (BytesMessage in/out)."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: asyncio.Queue[bytes] = asyncio.Queue()
        self._end_done = False

    async def recv_message(self) -> Any:
        return await self.inbox.get()

    async def send_message(self, msg: Any) -> None:
        await self.sent.put(bytes(msg.data))

    async def end(self) -> None:
        self._end_done = True

    async def recv_trailing_metadata(self) -> None:
        return None


def test_client_side_answers_captured_daemon_requests(tmp_path: Path) -> None:
    from bkcore.api.pb.control import BytesMessage

    session = Session()
    session.allow(SecretsProvider({"mysecret": b"s3cr3t\n"}))
    session.allow(SSHProvider({"default": str(tmp_path / "agent.sock")}))

    async def main() -> dict[int, dict[str, Any]]:
        outer = FakeOuter()
        serving = asyncio.ensure_future(serve_tunnel(outer, session))  # type: ignore[arg-type]
        daemon = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        daemon.initiate_connection()
        results: dict[int, dict[str, Any]] = {}
        for sid, path in (
            (1, "/moby.buildkit.secrets.v1.Secrets/GetSecret"),
            (3, "/moby.sshforward.v1.SSH/CheckAgent"),
        ):
            events = captured(path)
            daemon.send_headers(sid, [tuple(h) for h in events[0]["headers"]])
            daemon.send_data(sid, framed(events[1]["hex"]), end_stream=True)
            results[sid] = {"data": b"", "headers": None, "trailers": None}
        await outer.inbox.put(BytesMessage(data=daemon.data_to_send()))
        while not all(r["trailers"] for r in results.values()):
            data = await outer.sent.get()
            for ev in daemon.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    results[ev.stream_id]["headers"] = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    results[ev.stream_id]["data"] += ev.data
                    daemon.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    results[ev.stream_id]["trailers"] = dict(ev.headers)
            if daemon.data_to_send():
                await outer.inbox.put(BytesMessage(data=daemon.data_to_send()))
        await outer.inbox.put(None)  # the daemon ends Control.Session
        await serving
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert left == []
        return results

    results = asyncio.run(main())
    secret = captured("/moby.buildkit.secrets.v1.Secrets/GetSecret")
    agent = captured("/moby.sshforward.v1.SSH/CheckAgent")
    assert results[1]["data"] == framed(secret[4]["hex"])  # 0a 07 "s3cr3t\n"
    assert results[3]["data"] == framed(agent[4]["hex"])  # empty CheckAgentResponse
    for r in results.values():
        assert r["headers"][":status"] == "200"
        assert r["headers"]["content-type"].startswith("application/grpc")
        assert r["trailers"]["grpc-status"] == "0"


def test_daemon_side_reads_go_style_answers_with_reset() -> None:
    secret = captured("/moby.buildkit.secrets.v1.Secrets/GetSecret")
    diffcopy = captured("/moby.filesync.v1.FileSync/DiffCopy")
    go_headers = [tuple(h) for h in secret[3]["headers"]]
    stat_msg = next(e for e in diffcopy if e["dir"] == "s2c" and e["ev"] == "MSG")

    async def main() -> tuple[bytes, list[Any], dict[str, str], bytes]:
        tunnel = _Tunnel()
        caller = TunnelCaller(tunnel, [SECRETS_GET, DIFFCOPY], "sid")
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        client.initiate_connection()
        seen: dict[str, Any] = {"headers": {}, "data": b""}

        def answer(sid: int, payload_hex: str) -> None:
            client.send_headers(sid, go_headers)
            client.send_data(sid, framed(payload_hex))
            client.send_headers(sid, [("grpc-status", "0")], end_stream=True)
            # RST_STREAM(NO_ERROR) right after the trailers, as grpc-go sends it (h2 will
            # not reset a stream it considers closed: the frame is written by hand)
            out = client.data_to_send()
            out += struct.pack(">I", 4)[1:] + b"\x03\x00" + struct.pack(">II", sid, 0)
            tunnel.feed(out)

        async def go_client() -> None:
            tunnel.feed(client.data_to_send())
            while (chunk := await tunnel.take()) is not None:
                for ev in client.receive_data(chunk):
                    if isinstance(ev, h2.events.RequestReceived):
                        headers: dict[Any, Any] = dict(ev.headers)
                        if headers[":path"] == DIFFCOPY:
                            # answers and ends before the daemon half-closes
                            answer(ev.stream_id, stat_msg["hex"])
                        else:
                            seen["headers"] = headers
                    elif isinstance(ev, h2.events.DataReceived):
                        seen["data"] += ev.data
                        client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 1:
                        answer(ev.stream_id, secret[4]["hex"])
                tunnel.feed(client.data_to_send())

        pump = asyncio.ensure_future(go_client())
        try:
            value = await get_secret(caller, "mysecret")
            got = []
            async with caller.open_stream(DIFFCOPY, Packet, [("dir-name", "context")]) as st:
                await asyncio.sleep(0)  # let the whole answer and the reset arrive first
                while (p := await st.recv()) is not None:
                    got.append(p)
        finally:
            caller.close()
            tunnel.lost()
            await pump
        return value, got, seen["headers"], seen["data"]

    value, got, headers, data = asyncio.run(main())
    assert value == b"s3cr3t\n"
    assert [p.stat.path for p in got] == [".dockerignore"]
    assert data == framed(secret[1]["hex"])  # the captured request bytes
    assert headers[":path"] == SECRETS_GET
    assert headers["content-type"].startswith("application/grpc")
    assert headers["te"] == "trailers"


def test_bounded_frame_repr_gives_hyperframes_text() -> None:
    """The tunnel replaces hyperframe's payload repr helper (h2 formats it for every received
    frame); the text must stay exactly what hyperframe produces."""
    import binascii
    import os

    import hyperframe.frame

    from bkcore.session.grpc_transport import _bounded_frame_repr

    def reference(data: bytes | None) -> str:  # hyperframe 6.1's _raw_data_repr
        if not data:
            return "None"
        r = binascii.hexlify(data).decode("ascii")
        if len(r) > 20:
            r = r[:20] + "..."
        return "<hex:" + r + ">"

    _bounded_frame_repr()
    for data in [None, b"", b"a", bytes(range(10)), bytes(range(11)), os.urandom(1 << 20)]:
        assert hyperframe.frame._raw_data_repr(data) == reference(data)
    frame = hyperframe.frame.DataFrame(1, data=os.urandom(100_000))
    assert repr(frame).endswith(reference(frame.serialize_body()))
