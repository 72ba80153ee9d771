"""bkcore.api.errors: bkcore errors <-> gRPC status, message and grpc-status-details-bin."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError

from bkcore.api import errors as apierr
from bkcore.api.pb import control
from bkcore.api.pb import status as rpc
from bkcore.errors import (
    BkError,
    DefinitionError,
    ExecError,
    FrontendError,
    PluginError,
    SessionError,
    SolveError,
)
from bkcore.session.transport import CallError
from bkcore.session.transport import Status as SessionStatus

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
CAPTURE = json.loads((VECTORS / "control_capture.json").read_text())["error_trailer_example"]
DIGEST = "sha256:01f7d69e4f31d752118141a60838dc78ee98f6a5e89c0c4bd97d1387380b942c"
DOCKERFILE = (
    b"FROM 127.0.0.1:5000/busybox:latest\nRUN echo to-stdout && echo to-stderr >&2 \\\n\n"
    b"  && true\nRUN exit 3\n"
)


def _details(details_bin: bytes) -> list[tuple[str, Any]]:
    msg = rpc.Status().parse(details_bin)
    return [(d.type_url, json.loads(d.value)) for d in msg.details]


def _run_exit_3() -> FrontendError:
    """The error a Dockerfile build raises for `RUN exit 3` on line 5 (frontend.py _located)."""
    exec_err = ExecError(
        ["/bin/sh", "-c", "exit 3"], 3, ["last line"], digest=DIGEST, description="[2/2] RUN exit 3"
    )
    located = FrontendError(f"{exec_err.description}: {exec_err.message}", "Dockerfile", 5)
    located.digest = DIGEST  # type: ignore[attr-defined]
    located.detail_lines = ["Dockerfile:5", "-" * 20, " 5 | >>> RUN exit 3"]  # type: ignore[attr-defined]
    located.__cause__ = exec_err
    return located


def test_exec_error_details_in_buildkit_order() -> None:
    status, message, details_bin = apierr.to_status(_run_exit_3())
    assert status == Status.UNKNOWN
    # worded as buildkitd words it (the capture's grpc-message): no Dockerfile:LINE or step
    # prefix, which a Go client gets from the details and its progress
    assert message == CAPTURE["grpc-message"]
    decoded = rpc.Status().parse(details_bin)
    assert decoded.code == 2 and decoded.message == message
    details = _details(details_bin)
    # BuildKit's order (the capture's, without its Go stack traces), then bkcore's own
    captured = [
        d["type_url"]
        for d in CAPTURE["grpc-status-details-bin (decoded google.rpc.Status)"]["details"]
        if not d["type_url"].endswith("stack.Stack+json")
    ]
    assert [url for url, _ in details] == [*captured, apierr.BKCORE_ERROR]
    values = dict(details)
    assert values[apierr.VERTEX] == {"digest": DIGEST}
    assert values[apierr.EXIT_MESSAGE] == {"Code": 3}
    source = values[apierr.SOURCE]
    assert source["info"]["filename"] == "Dockerfile"
    capture_source = next(
        d["value_json"]
        for d in CAPTURE["grpc-status-details-bin (decoded google.rpc.Status)"]["details"]
        if d["type_url"] == apierr.SOURCE
    )
    assert source["ranges"] == capture_source["ranges"]


def test_exec_error_roundtrip_keeps_class_digest_exit_code_and_line() -> None:
    original = _run_exit_3()
    back = apierr.from_status(*apierr.to_status(original))
    assert type(back) is FrontendError and str(back) == str(original)
    assert back.filename == "Dockerfile" and back.line == 5
    assert back.digest == DIGEST  # type: ignore[attr-defined]
    assert back.detail_lines == original.detail_lines  # type: ignore[attr-defined]
    cause = back.__cause__
    assert type(cause) is ExecError and str(cause) == str(original.__cause__)
    assert cause.exit_code == 3 and cause.argv == ["/bin/sh", "-c", "exit 3"]
    assert cause.digest == DIGEST and cause.description == "[2/2] RUN exit 3"
    assert cause.output_tail == ["last line"]
    assert back.grpc_status == Status.UNKNOWN  # type: ignore[attr-defined]


def test_plain_solve_error_and_exec_error() -> None:
    err = SolveError("failed to compute cache key", DIGEST, "[1/2] COPY a b")
    status, _, details_bin = apierr.to_status(err)
    assert status == Status.UNKNOWN
    assert [u for u, _ in _details(details_bin)] == [apierr.VERTEX, apierr.BKCORE_ERROR]
    back = apierr.from_status(*apierr.to_status(err))
    assert type(back) is SolveError and str(back) == str(err)
    assert (back.digest, back.description, back.message) == (DIGEST, err.description, err.message)
    ex = ExecError(["false"], 1, digest=DIGEST)
    back_ex = apierr.from_status(*apierr.to_status(ex))
    assert type(back_ex) is ExecError and back_ex.exit_code == 1 and back_ex.argv == ["false"]


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (DefinitionError("invalid missing input digest", DIGEST), Status.INVALID_ARGUMENT),
        (PluginError("invalid frontend: nosuch.v0"), Status.UNKNOWN),
        (SessionError("no active session for abc"), Status.UNKNOWN),
        (FrontendError("unknown instruction: FRM", "Dockerfile", 1), Status.UNKNOWN),
        (BkError("plain"), Status.UNKNOWN),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_classes_and_codes(exc: BkError, status: Status) -> None:
    got, message, details_bin = apierr.to_status(exc)
    assert got == status
    # the wire message as BuildKit's: the Dockerfile line travels in the Source detail
    assert message == str(exc).removeprefix("Dockerfile:1: ")
    back = apierr.from_status(got, message, details_bin)
    assert type(back) is type(exc) and str(back) == str(exc)
    assert back.grpc_status == status  # type: ignore[attr-defined]
    if isinstance(exc, DefinitionError):
        assert isinstance(back, DefinitionError) and back.digest == DIGEST


def test_subclass_comes_back_as_nearest_known_class() -> None:
    from bkcore.session.secrets import SecretNotFoundError

    err = SecretNotFoundError("secret mysecret not found")
    back = apierr.from_status(*apierr.to_status(err))
    assert type(back) is SessionError and str(back) == str(err)


def test_session_call_error_and_explicit_status() -> None:
    err = CallError(SessionStatus.NOT_FOUND, "not found", "/moby.buildkit.secrets.v1.Secrets/x")
    status, message, _ = apierr.to_status(err)
    assert status == Status.NOT_FOUND and message == "not found"
    unimpl = SessionError("method not supported by the client")
    unimpl.grpc_status = Status.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert apierr.to_status(unimpl)[0] == Status.UNIMPLEMENTED
    # an explicit status anywhere in the cause chain wins (Go's Code() unwraps)
    outer = SolveError("wrapped")
    outer.__cause__ = unimpl
    assert apierr.to_status(outer)[0] == Status.UNIMPLEMENTED


def test_cancel_and_timeout() -> None:
    status, message, details_bin = apierr.to_status(asyncio.CancelledError())
    assert (status, message) == (Status.CANCELLED, "context canceled")
    assert rpc.Status().parse(details_bin).details == []
    back = apierr.from_status(status, message, details_bin)
    assert back.grpc_status == Status.CANCELLED and str(back) == "context canceled"  # type: ignore[attr-defined]
    assert apierr.to_status(TimeoutError("x"))[0] == Status.DEADLINE_EXCEEDED
    # other Python exceptions stay UNKNOWN with their one-line text
    assert apierr.to_status(ValueError("a\nb"))[:2] == (Status.UNKNOWN, "a b")


def _buildkit_details() -> list[tuple[str, bytes]]:
    """What a Go buildkitd sends for RUN exit 3 (capture values, plus the Dockerfile data)."""
    out = [(apierr.STACK, b'{"frames":[],"pid":1}')]
    for d in CAPTURE["grpc-status-details-bin (decoded google.rpc.Status)"]["details"]:
        if d["type_url"] == apierr.SOURCE:
            value = dict(d["value_json"])
            value["info"] = {
                "filename": "Dockerfile",
                "data": base64.b64encode(DOCKERFILE).decode(),
            }
            out.append((d["type_url"], json.dumps(value).encode()))
        elif "value_json" in d:
            out.append((d["type_url"], json.dumps(d["value_json"]).encode()))
    return out


def test_errors_from_a_go_daemon_are_inferred() -> None:
    message = CAPTURE["grpc-message"]
    details_bin = apierr.encode_details(Status.UNKNOWN, message, _buildkit_details())
    back = apierr.from_status(int(CAPTURE["grpc-status"]), message, details_bin)
    assert isinstance(back, FrontendError) and str(back) == message
    assert back.filename == "Dockerfile" and back.line == 5
    assert back.digest == DIGEST  # type: ignore[attr-defined]
    assert ">>> RUN exit 3" in "\n".join(back.detail_lines)  # type: ignore[attr-defined]
    cause = back.__cause__
    assert isinstance(cause, ExecError) and str(cause) == message
    assert cause.exit_code == 3 and cause.argv == ["/bin/sh -c exit 3"] and cause.digest == DIGEST
    # the trailer value as it travels (base64 without padding) is accepted too
    b64 = base64.b64encode(details_bin).rstrip(b"=")
    again = apierr.from_status(Status.UNKNOWN, message, b64)
    assert isinstance(again, FrontendError) and again.line == 5


def test_bad_or_missing_details_keep_the_message() -> None:
    for junk in (b"", b"\xff\xff\xff", b"not base64 at all!!", None):
        back = apierr.from_status(Status.UNKNOWN, "boom", junk)
        assert type(back) is BkError and str(back) == "boom"
    # a bkcore detail that is not JSON or names no known class falls back to inference
    bad = apierr.encode_details(
        Status.UNKNOWN,
        "x",
        [(apierr.BKCORE_ERROR, b"{"), (apierr.VERTEX, json.dumps({"digest": DIGEST}).encode())],
    )
    back = apierr.from_status(Status.UNKNOWN, "x", bad)
    assert type(back) is SolveError and back.digest == DIGEST and str(back) == "x"
    assert type(apierr.from_status(Status.INVALID_ARGUMENT, "bad", None)) is DefinitionError


# -- over a real HTTP/2 connection (grpclib server on a unix socket) -------------------------


class _Failing:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def info(self, stream: Any) -> None:
        await stream.recv_message()
        raise apierr.to_grpc_error(self.exc) from self.exc

    def __mapping__(self) -> dict[str, Handler]:
        return {
            "/moby.buildkit.v1.Control/Info": Handler(
                self.info, Cardinality.UNARY_UNARY, control.InfoRequest, control.InfoResponse
            )
        }


async def _raw_trailers(sock: str) -> list[tuple[str, str]]:
    """Call Info with a bare h2 client and return the trailing headers as sent."""
    import h2.config
    import h2.connection
    import h2.events

    reader, writer = await asyncio.open_unix_connection(sock)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/moby.buildkit.v1.Control/Info"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    conn.send_data(sid, b"\x00\x00\x00\x00\x00", end_stream=True)
    writer.write(conn.data_to_send())
    headers: list[tuple[str, str]] = []
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    headers += [(str(k), str(v)) for k, v in event.headers]
                if isinstance(event, h2.events.StreamEnded):
                    return headers
            writer.write(conn.data_to_send())
    finally:
        writer.close()
    return headers


def test_trailer_bytes_on_the_wire(tmp_path: Path) -> None:
    original = _run_exit_3()

    async def call() -> tuple[list[tuple[str, str]], GRPCError]:
        from grpclib.client import Channel
        from grpclib.server import Server

        server = Server([_Failing(original)], status_details_codec=apierr.StatusDetailsCodec())
        sock = str(tmp_path / "e.sock")
        await server.start(path=sock)
        try:
            headers = await _raw_trailers(sock)
            channel = Channel(path=sock, status_details_codec=apierr.StatusDetailsCodec())
            try:
                async with channel.request(
                    "/moby.buildkit.v1.Control/Info",
                    Cardinality.UNARY_UNARY,
                    control.InfoRequest,
                    control.InfoResponse,
                ) as stream:
                    await stream.send_message(control.InfoRequest(), end=True)
                    try:
                        await stream.recv_message()
                    except GRPCError as exc:
                        return headers, exc
                raise AssertionError("no error")
            finally:
                channel.close()
        finally:
            server.close()
            await server.wait_closed()

    headers, grpc_error = asyncio.run(call())
    status, message, details_bin = apierr.to_status(original)
    trailers = dict(headers)
    assert trailers["grpc-status"] == "2"
    assert trailers["content-type"].startswith("application/grpc")
    value = trailers["grpc-status-details-bin"]
    assert "=" not in value  # base64 without padding, as grpc-go writes it
    assert base64.b64decode(value + "=" * (-len(value) % 4)) == details_bin
    # grpclib's client decodes the same trailer with our codec, and the error comes back whole
    assert grpc_error.status == status and grpc_error.message == message
    back = apierr.from_grpc_error(grpc_error)
    assert type(back) is FrontendError and str(back) == str(original) and back.line == 5
    assert isinstance(back.__cause__, ExecError) and back.__cause__.exit_code == 3


def test_mistyped_bkcore_attributes_are_ignored() -> None:
    detail = {
        "classes": ["ExecError", "NoSuchError"],
        "text": "t",
        "attrs": {"exit_code": "3", "argv": [1, 2], "digest": DIGEST, "line": True},
    }
    bin_ = apierr.encode_details(
        Status.UNKNOWN, "t", [(apierr.BKCORE_ERROR, json.dumps(detail).encode())]
    )
    back = apierr.from_status(Status.UNKNOWN, "t", bin_)
    assert type(back) is ExecError and str(back) == "t"
    assert back.exit_code == 0 and back.argv == [] and back.digest == DIGEST
    assert not hasattr(back, "line")


def test_snippet_from_a_go_daemon_matches_the_embedded_layout() -> None:
    from bkcore.frontends.dockerfile.frontend import snippet

    message = CAPTURE["grpc-message"]
    details_bin = apierr.encode_details(Status.UNKNOWN, message, _buildkit_details())
    back = apierr.from_status(Status.UNKNOWN, message, details_bin)
    expect = snippet(DOCKERFILE.decode(), 5, end_line=5, filename="Dockerfile")
    assert back.detail_lines == expect  # type: ignore[attr-defined]
    text = "\n".join(f"RUN step {i}" for i in range(1, 13)) + "\n"
    for line, end in ((1, 1), (2, 4), (11, 11), (12, 20), (7, 0), (13, 13)):
        mine = apierr._snippet(text.encode(), "x/Dockerfile", line, end)
        assert mine == snippet(text, line, end_line=end, filename="x/Dockerfile"), (line, end)


def test_cause_cycles_and_long_chains_are_bounded() -> None:
    a = SolveError("a", DIGEST)
    b = SolveError("b")
    a.__cause__, b.__cause__ = b, a  # a cycle
    status, message, details_bin = apierr.to_status(a)
    back = apierr.from_status(status, message, details_bin)
    assert str(back) == str(a) and str(back.__cause__) == str(b)
    deep: BkError = BkError("0")
    for i in range(1, 200):
        outer = BkError(str(i))
        outer.__cause__ = deep
        deep = outer
    back = apierr.from_status(*apierr.to_status(deep))
    depth = 0
    cur: BaseException | None = back
    while cur is not None:
        depth, cur = depth + 1, cur.__cause__
    assert str(back) == "199" and 2 <= depth <= 40
