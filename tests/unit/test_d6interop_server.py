"""The daemon's services as BuildKit's client expects them: LLBBridge requests are read with
the same 4 MiB limit as Control's (grpc-go's default, which buildkitd keeps) and checked
strictly, and a build whose client session closes ends CANCELLED (buildkitd cancels the
build's context with the session)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from bkcore.api import errors as apierr
from bkcore.api import gateway, methods
from bkcore.api.codec import GoCodec
from bkcore.api.errors import StatusDetailsCodec
from bkcore.api.server import _until_session_closes
from bkcore.errors import SessionError


async def raw_unary(
    channel: Any, path: str, frame: bytes, metadata: dict[str, str] | None = None
) -> GRPCError | None:
    """Send ``frame`` (already framed) as the request body of a unary call."""
    async with channel.request(path, Cardinality.UNARY_UNARY, bytes, bytes, metadata=metadata) as s:
        await s.send_request()
        await s._stream.send_data(frame, end_stream=True)
        s._send_message_done = s._end_done = True  # sent by hand, past grpclib's framing
        try:
            await s.recv_message()
            await s.recv_trailing_metadata()
        except GRPCError as err:
            return err
    return None


def test_llbbridge_requests_have_the_receive_limit_and_strict_decoding() -> None:
    async def main() -> None:
        servicer = gateway.LLBBridgeServicer(None, gateway.Forwarders(), max_recv=1024)  # type: ignore[arg-type]
        async with ChannelFor(
            [servicer], codec=GoCodec(), status_details_codec=StatusDetailsCodec()
        ) as channel:
            md = {methods.BUILD_ID: "nosuch"}
            read_file = methods.path(methods.LLBBRIDGE, "ReadFile")
            # a header announcing 1 GiB: refused from the header, the body is never read
            err = await raw_unary(
                channel, read_file, struct.pack(">?I", False, 1 << 30) + b"x" * 10, md
            )
            assert err is not None and err.status == Status.RESOURCE_EXHAUSTED
            assert err.message == f"grpc: received message larger than max ({1 << 30} vs. 1024)"
            big = b"\x0a" + b"\x80\x08" + b"r" * 1024  # ReadFileRequest{ref: 1024 bytes}
            err = await raw_unary(channel, read_file, struct.pack(">?I", False, len(big)) + big, md)
            assert err is not None and err.status == Status.RESOURCE_EXHAUSTED
            # malformed: a length running past the end (betterproto alone reads ref "ab")
            garbage = b"\x0a\x64ab"
            err = await raw_unary(
                channel, read_file, struct.pack(">?I", False, len(garbage)) + garbage, md
            )
            assert err is not None and err.status == Status.INVALID_ARGUMENT
            assert (err.message or "").startswith("malformed ReadFileRequest message: ")
            # the service goes on: a well-formed request under the limit reaches the
            # forwarder lookup (no such build here)
            ok = b"\x0a\x02ab"
            err = await raw_unary(channel, read_file, struct.pack(">?I", False, len(ok)) + ok, md)
            assert err is not None and err.status == Status.NOT_FOUND

    asyncio.run(asyncio.wait_for(main(), 60))


class _Conn:
    id = "sess-1"

    def __init__(self) -> None:
        self.closed = asyncio.Event()


def test_build_of_a_closed_session_ends_cancelled() -> None:
    async def main() -> None:
        conn = _Conn()
        stopped = asyncio.Event()

        async def build() -> None:
            try:
                await asyncio.sleep(60)
            finally:
                stopped.set()

        async def close_soon() -> None:
            await asyncio.sleep(0)
            conn.closed.set()

        closer = asyncio.ensure_future(close_soon())
        try:
            await _until_session_closes(build(), conn, "Solve ref1")  # type: ignore[arg-type]
        except SessionError as exc:
            assert stopped.is_set()  # the build was cancelled and unwound first
            status, message, _ = apierr.to_status(exc)
            assert status == Status.CANCELLED
            assert message == "Solve ref1: the client's session sess-1 closed; build cancelled"
        else:
            raise AssertionError("the build outlived its session")
        await closer

    asyncio.run(asyncio.wait_for(main(), 60))


def test_filters_follow_containerds_syntax_and_buildkits_wording() -> None:
    import pytest

    from bkcore.api.server import check_filters
    from bkcore.errors import DefinitionError

    for ok in (
        ["type==regular"],
        ["type~=local", "inuse==false,mutable!=true"],
        ["id"],
        ["labels.org.mobyproject.buildkit.worker.executor==oci"],
        ['description=="local source for src"'],
    ):
        check_filters(ok, "diskusage")
    # what buildctl v0.11.6 got from buildkitd for `du --filter 'bad filter==='`:
    # failed to parse diskusage filters [bad filter===]: filters: parse error: ...
    with pytest.raises(DefinitionError) as info:
        check_filters(["bad filter==="], "diskusage")
    assert str(info.value).startswith("failed to parse diskusage filters [bad filter===]: ")
    assert apierr.to_status(info.value)[0] == Status.INVALID_ARGUMENT
    with pytest.raises(DefinitionError) as info:
        check_filters(["type==a b"], "prune")
    assert str(info.value).startswith("failed to parse prune filters [type==a b]: ")
    with pytest.raises(DefinitionError) as info:
        check_filters(["id~=("], "prune")
    assert "failed to parse prune filters [id~=(]: invalid filter 'id~=('" in str(info.value)


def test_solve_response_carries_frontend_metadata_and_buildinfo_as_buildkitd() -> None:
    # buildctl --metadata-file of a local output against buildkitd:
    # {"containerimage.buildinfo": "e30="}
    assert gateway.solve_response({}, {}) == {"containerimage.buildinfo": "e30="}
    got = gateway.solve_response(
        {"containerimage.digest": "sha256:x"},
        {
            "frontend.caps": b"a,b",
            "containerimage.buildinfo": b'{"sources":[]}',
            "containerimage.buildinfo/linux/amd64": b"{}",
            "other": b"not passed",
        },
    )
    assert got == {
        "containerimage.digest": "sha256:x",
        "frontend.caps": "a,b",
        "containerimage.buildinfo": "eyJzb3VyY2VzIjpbXX0=",
        "containerimage.buildinfo/linux/amd64": "e30=",
    }


def test_ping_caps_in_buildkitds_order_and_flags() -> None:
    """LLBBridge.Ping against what buildkitd v0.11.6 answered buildctl (recorded): the same
    frontend caps in the same order (sorted by id) with the same deprecated flags; every cap
    buildkitd enables is enabled here too except the ones bkcore refuses with a reason; LLB
    caps sorted likewise."""
    import json
    from pathlib import Path

    from bkcore.api.pb import gateway as gpb

    data = Path(__file__).resolve().parents[1] / "data" / "buildctl" / "buildkitd_pong.json"
    want = gpb.PongResponse().parse(bytes.fromhex(json.loads(data.read_text())["hex"]))

    async def ping() -> Any:
        servicer = gateway.LLBBridgeServicer(_FakeController(), gateway.Forwarders())  # type: ignore[arg-type]
        return await servicer.ping(None, gpb.PingRequest())  # type: ignore[arg-type]

    got = asyncio.run(ping())
    assert [c.id for c in got.frontend_api_caps] == [c.id for c in want.frontend_api_caps]
    for mine, theirs in zip(got.frontend_api_caps, want.frontend_api_caps, strict=True):
        assert mine.deprecated == theirs.deprecated, mine.id
        if not mine.enabled:
            assert mine.disabled_reason == "unsupported" and mine.id in mine.disabled_reason_msg
    refused = {c.id for c in got.frontend_api_caps if not c.enabled}
    assert refused == {
        "gateway.exec",
        "gateway.exec.extrahosts",
        "gateway.exec.signals",
        "reference.attestations",
    }
    ids = [c.id for c in got.llb_caps]
    assert ids == sorted(ids)
    # bkcore has no cache backends for azblob/gha/s3, attestations or source policies
    missing = {c.id for c in want.llb_caps} - set(ids)
    assert missing <= {
        "cache.azblob",
        "cache.gha",
        "cache.s3",
        "exporter.image.attestations",
        "source.policy",
    }


class _FakeController:
    class engine:
        class worker:
            name = "runc"

            @staticmethod
            def info() -> Any:
                from bkcore.worker import WorkerInfo

                return WorkerInfo(id="w1", labels={}, platforms=("linux/amd64",))


def test_metadata_vertex_completes_with_its_start_time() -> None:
    """buildctl keys a vertex's intervals by their start time: the completion of "[internal]
    load metadata for REF" must repeat the start of the first event, or buildctl shows the
    vertex as still running (no DONE) -- seen with --oci-layout named contexts."""
    from types import SimpleNamespace

    from bkcore.bridge import LLBBridge
    from bkcore.progress import ProgressStream, VertexEvent

    class Source:
        async def resolve_image_config(self, ref: str, **kwargs: Any) -> tuple[str, bytes]:
            await asyncio.sleep(0.01)  # the completion comes later than the start
            return "sha256:abc", b"{}"

    class Registry:
        def __contains__(self, key: object) -> bool:
            return key == "docker-image"

        def load(self, key: str) -> Any:
            return Source

    plugins = SimpleNamespace(registry=lambda family: Registry())
    engine: Any = SimpleNamespace(plugins=plugins, platform="linux/amd64")
    stream = ProgressStream()
    reader = stream.subscribe()
    bridge = LLBBridge(engine, None, None, session_id="s", progress=stream)  # type: ignore[arg-type]
    asyncio.run(bridge.resolve_image_config("busybox"))
    events = [e for e in reader.read_nowait() if isinstance(e, VertexEvent)]
    first, last = events[0], events[-1]
    assert first.digest == last.digest and first.completed is None
    assert last.completed is not None and last.started == first.started


def test_failed_solve_keeps_the_failed_steps_error_for_the_wire() -> None:
    """A Control.Solve whose build fails with a located Dockerfile error keeps its cause
    (the ExecError) on the way out, so the status has buildkitd's message and the
    ExitMessage detail (it was raised 'from None', which dropped both)."""
    from pathlib import Path

    from bkcore import llb
    from bkcore.api.pb import control as cpb
    from bkcore.api.pb import status as rpc
    from bkcore.api.server import ControlServicer, DaemonSettings
    from bkcore.errors import ExecError, FrontendError

    digest = "sha256:" + "cd" * 32
    cause = ExecError(["/bin/sh", "-c", "exit 5"], 5, digest=digest, description="[1/2] RUN")
    located = FrontendError(f"{cause.description}: {cause.message}", "Dockerfile", 2)
    located.digest = digest  # type: ignore[attr-defined]

    class Controller:
        async def build(self, options: Any, **kwargs: Any) -> Any:
            raise located from cause

    servicer = ControlServicer(Controller(), DaemonSettings(root=Path("/nonexistent")))  # type: ignore[arg-type]
    definition = llb.scratch().file(llb.mkfile("/f", 0o644, b"x")).marshal().to_pb()
    request = cpb.SolveRequest(ref="r1", definition=definition)

    async def main() -> BaseException:
        try:
            await servicer.solve(request)
        except BaseException as exc:
            return exc
        raise AssertionError("the build did not fail")

    err = asyncio.run(main())
    assert err is located and err.__cause__ is cause
    _, message, details_bin = apierr.to_status(err)
    assert message == 'process "/bin/sh -c exit 5" did not complete successfully: exit code: 5'
    urls = [d.type_url for d in rpc.Status().parse(details_bin).details]
    assert apierr.EXIT_MESSAGE in urls and apierr.VERTEX in urls
