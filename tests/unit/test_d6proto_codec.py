"""GoCodec decoding is strict: malformed bytes are INVALID_ARGUMENT with one clear line, and a
grpclib server using it answers them with that status and keeps serving."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError

from bkcore.api import errors as apierr
from bkcore.api.codec import GoCodec, MalformedMessageError
from bkcore.api.pb import control, fsutil, gateway, worker
from bkcore.session.filesync import packets

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
SOLVE = control.SolveRequest(ref="r" * 25, session="s", frontend_attrs={"k": "v"})


def test_valid_captures_decode() -> None:
    codec = GoCodec()
    capture = json.loads((VECTORS / "control_capture.json").read_text())
    for s in capture["samples"]:
        if s["path"].endswith("/Status") and s["direction"] == "daemon->client":
            msg = codec.decode(bytes.fromhex(s["hex"]), control.StatusResponse)
            assert isinstance(msg, control.StatusResponse)
    workers = next(s for s in capture["samples"] if s["len"] == 486)
    got = codec.decode(bytes.fromhex(workers["hex"]), control.ListWorkersResponse)
    assert isinstance(got.record[0], worker.WorkerRecord) and len(got.record[0].platforms) == 5


@pytest.mark.parametrize(
    ("data", "cls", "reason"),
    [
        (GoCodec().encode(SOLVE, control.SolveRequest)[:-1], control.SolveRequest, "past the end"),
        (b"\x08\x01", control.SolveRequest, "SolveRequest.ref (field 1) has wire type 0"),
        (b"\x0a\x02\xff\xfe", control.SolveRequest, "not valid UTF-8"),
        (b"\x08" + b"\xff" * 11, control.PruneRequest, "varint"),
        (b"\x0b", control.SolveRequest, "unsupported wire type 3"),
        (b"\x00\x01", control.InfoRequest, "field number 0"),
        # inside a nested message: a Definition whose def entry runs past its parent
        (b"\x12\x03\x0a\x05ab", control.SolveRequest, "past the end"),
        (b"\x12\x05\x18", fsutil.Packet, "past the end"),
    ],
    ids=["cut", "wiretype", "utf8", "varint", "group", "field0", "nested", "packet"],
)
def test_malformed_is_invalid_argument(data: bytes, cls: Any, reason: str) -> None:
    with pytest.raises(MalformedMessageError) as info:
        GoCodec().decode(data, cls)
    err = info.value
    assert err.status == Status.INVALID_ARGUMENT
    assert err.message is not None and f"malformed {cls.__name__} message: " in err.message
    assert reason in err.message and "\n" not in err.message
    # the error mapping keeps it as it is
    assert apierr.to_status(err)[:2] == (Status.INVALID_ARGUMENT, err.message)
    assert apierr.to_grpc_error(err) is err


def test_unknown_and_packed_fields_are_accepted() -> None:
    codec = GoCodec()
    # an unknown field (a newer client) is skipped, as Go does, and kept for re-encoding
    data = codec.encode(SOLVE, control.SolveRequest) + b"\xa8\x06\x01"  # field 101 varint
    msg = codec.decode(data, control.SolveRequest)
    assert msg.ref == SOLVE.ref and codec.encode(msg, control.SolveRequest) == data
    init = gateway.InitMessage(container_id="c", fds=[0, 1, 2, 300])
    wire = codec.encode(init, gateway.InitMessage)
    assert codec.decode(wire, gateway.InitMessage).fds == [0, 1, 2, 300]
    # unpacked repeated scalars (allowed by proto3 parsers) decode too
    assert codec.decode(b"\x18\x01\x18\x02", gateway.InitMessage).fds == [1, 2]


def test_hand_written_classes_report_malformed_input_alike() -> None:
    with pytest.raises(MalformedMessageError, match="malformed Packet message"):
        GoCodec().decode(b"\x12\x05\x18", packets.Packet)


class _Info:
    async def info(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(control.InfoResponse(buildkit_version=worker.BuildkitVersion()))

    def __mapping__(self) -> dict[str, Handler]:
        return {
            "/moby.buildkit.v1.Control/Info": Handler(
                self.info, Cardinality.UNARY_UNARY, control.InfoRequest, control.InfoResponse
            )
        }


async def _call(sock: str, payload: bytes) -> dict[str, str]:
    """One Info call with a raw gRPC frame; the response headers and trailers."""
    import h2.config
    import h2.connection
    import h2.events

    reader, writer = await asyncio.open_unix_connection(sock)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/moby.buildkit.v1.Control/Info"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    frame = b"\x00" + len(payload).to_bytes(4, "big") + payload
    conn.send_data(1, frame, end_stream=True)
    writer.write(conn.data_to_send())
    out: dict[str, str] = {}
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return out
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    out.update((str(k), str(v)) for k, v in event.headers)
                if isinstance(event, h2.events.StreamEnded):
                    return out
            writer.write(conn.data_to_send())
    finally:
        writer.close()


def test_server_answers_malformed_request_and_keeps_serving(tmp_path: Path) -> None:
    from grpclib.client import Channel
    from grpclib.server import Server

    async def main() -> tuple[dict[str, str], dict[str, str], Any]:
        server = Server(
            [_Info()], codec=GoCodec(), status_details_codec=apierr.StatusDetailsCodec()
        )
        sock = str(tmp_path / "d.sock")
        await server.start(path=sock)
        try:
            bad = await _call(sock, b"\x0a\x05ab")  # InfoRequest has no field 1; cut anyway
            good = await _call(sock, b"")
            channel = Channel(path=sock, codec=GoCodec())
            try:
                async with channel.request(
                    "/moby.buildkit.v1.Control/Info",
                    Cardinality.UNARY_UNARY,
                    control.InfoRequest,
                    control.InfoResponse,
                ) as stream:
                    await stream.send_message(control.InfoRequest(), end=True)
                    reply = await stream.recv_message()
            finally:
                channel.close()
            return bad, good, reply
        finally:
            server.close()
            await server.wait_closed()

    bad, good, reply = asyncio.run(main())
    assert bad["grpc-status"] == str(Status.INVALID_ARGUMENT.value)
    assert "malformed InfoRequest message" in bad["grpc-message"]
    assert good["grpc-status"] == "0"
    assert isinstance(reply, control.InfoResponse) and reply.buildkit_version is not None


def test_client_gets_grpc_error_for_bad_reply() -> None:
    with pytest.raises(GRPCError):
        GoCodec().decode(b"\x0a\xff", control.InfoResponse)
