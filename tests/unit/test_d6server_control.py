"""ControlServicer over an in-memory grpclib channel, with a controller stand-in: every
method answered on the wire (GoCodec, status details), Status before/after Solve, request
validation, size limit and undecodable bodies answered with a status while serving goes on."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from bkcore import llb
from bkcore.api import methods
from bkcore.api import server as srv
from bkcore.api.codec import GoCodec
from bkcore.api.errors import StatusDetailsCodec, from_grpc_error
from bkcore.api.pb import control as cpb
from bkcore.controller import BuildOptions, BuildResponse
from bkcore.errors import DefinitionError, ExportError
from bkcore.llb import pb
from bkcore.progress import LogEvent, ProgressStream, StatusEvent, VertexEvent, WarningEvent
from bkcore.worker import WorkerInfo

DIGEST = "sha256:" + "a" * 64


class FakeWorker:
    name = "fakeworker"

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id="w1",
            platforms=("linux/amd64", "linux/arm64/v8"),
            labels={"org.mobyproject.buildkit.worker.executor": "oci", "a": "1"},
        )


class FakeEngine:
    worker = FakeWorker()


class FakeController:
    """Writes a vertex, waits for ``gate``, then logs and completes the vertex."""

    engine = FakeEngine()

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.calls: list[BuildOptions] = []

    async def build(
        self, options: BuildOptions, *, progress: ProgressStream, definition: Any = None
    ) -> BuildResponse:
        self.calls.append(options)
        progress.write(VertexEvent(digest=DIGEST, name="step one", started=1.25))
        self.started.set()
        await self.gate.wait()
        progress.write(LogEvent(vertex=DIGEST, stream=2, data=b"hello\n", timestamp=2.5))
        progress.write(
            StatusEvent(id="extracting", vertex=DIGEST, name="extracting", current=3, total=9)
        )
        progress.write(WarningEvent(vertex=DIGEST, level=1, short="careful", url="https://x"))
        progress.write(VertexEvent(digest=DIGEST, name="step one", started=1.25, completed=3.0))
        return BuildResponse({"containerimage.digest": "sha256:bb"})


def definition() -> pb.Definition:
    data = llb.scratch().file(llb.mkfile("/f", 0o644, b"x")).marshal().to_bytes()
    return pb.Definition().parse(data)


def run(
    body: Callable[[Any, FakeController], Awaitable[None]],
    tmp_path: Path,
    **settings: Any,
) -> None:
    async def main() -> None:
        controller = FakeController()
        servicer = srv.ControlServicer(
            controller,  # type: ignore[arg-type]
            srv.DaemonSettings(root=tmp_path, **settings),
        )
        async with ChannelFor(
            [servicer], codec=GoCodec(), status_details_codec=StatusDetailsCodec()
        ) as channel:
            await body(channel, controller)

    asyncio.run(main())


async def unary(channel: Any, path: str, request: Any, reply_type: Any) -> Any:
    async with channel.request(path, Cardinality.UNARY_UNARY, type(request), reply_type) as s:
        await s.send_message(request, end=True)
        reply = await s.recv_message()
    return reply


async def stream_all(
    channel: Any, path: str, request: Any, reply_type: Any
) -> tuple[Any, list[Any]]:
    async with channel.request(path, Cardinality.UNARY_STREAM, type(request), reply_type) as s:
        await s.send_message(request, end=True)
        await s.recv_initial_metadata()
        out = [m async for m in s]
        return s.initial_metadata, out


def test_info_and_list_workers(tmp_path: Path) -> None:
    async def body(channel: Any, _: FakeController) -> None:
        info = await unary(channel, methods.CONTROL_INFO, cpb.InfoRequest(), cpb.InfoResponse)
        assert info.buildkit_version.package == "bkcore"
        import bkcore

        assert info.buildkit_version.version == bkcore.__version__
        reply = await unary(
            channel, methods.CONTROL_LIST_WORKERS, cpb.ListWorkersRequest(), cpb.ListWorkersResponse
        )
        (record,) = reply.record
        assert record.id == "w1"
        assert [(p.os, p.architecture, p.variant) for p in record.platforms] == [
            ("linux", "amd64", ""),
            ("linux", "arm64", "v8"),
        ]
        assert record.labels["a"] == "1"
        assert record.labels[srv.WORKER_NAME_LABEL] == "fakeworker"
        (policy,) = record.gc_policy
        assert (policy.all, policy.keep_duration, policy.keep_bytes) == (True, 3_600 * 10**9, 5)
        assert list(policy.filters) == ["type==regular"]
        assert record.buildkit_version.package == "bkcore"
        none = await unary(
            channel,
            methods.CONTROL_LIST_WORKERS,
            cpb.ListWorkersRequest(filter=["id==other"]),
            cpb.ListWorkersResponse,
        )
        assert none.record == []
        labelled = await unary(
            channel,
            methods.CONTROL_LIST_WORKERS,
            cpb.ListWorkersRequest(filter=["labels.a==1"]),
            cpb.ListWorkersResponse,
        )
        assert [r.id for r in labelled.record] == ["w1"]

    policy = srv.GCPolicy(all=True, keep_duration=3600, keep_bytes=5, filters=("type==regular",))
    run(body, tmp_path, gc_policy=(policy,))


def test_status_before_solve_gets_every_event_and_ends_with_the_job(tmp_path: Path) -> None:
    async def body(channel: Any, controller: FakeController) -> None:
        status = asyncio.create_task(
            stream_all(
                channel, methods.CONTROL_STATUS, cpb.StatusRequest(ref="r1"), cpb.StatusResponse
            )
        )
        await asyncio.sleep(0.05)  # Status is waiting for the job
        request = cpb.SolveRequest(
            ref="r1",
            definition=definition(),
            exporter="image",
            exporter_attrs={"name": "reg/x:1", "push": "true"},
            frontend_attrs={"no-cache": "", "build-arg:SOURCE_DATE_EPOCH": "1700000000"},
        )
        solve = asyncio.create_task(
            unary(channel, methods.CONTROL_SOLVE, request, cpb.SolveResponse)
        )
        await controller.started.wait()
        controller.gate.set()
        reply = await solve
        headers, messages = await status
        assert reply.exporter_response == {"containerimage.digest": "sha256:bb"}
        (options,) = controller.calls
        assert [(o.type, dict(o.attrs)) for o in options.outputs] == [
            ("image", {"name": "reg/x:1", "push": "true", "source-date-epoch": "1700000000"})
        ]
        assert options.no_cache and options.definition
        assert methods.CURRENT_TIMESTAMP in headers
        vertexes = [v for m in messages for v in m.vertexes]
        assert [v.digest for v in vertexes] == [DIGEST, DIGEST]
        assert vertexes[0].started.seconds == 1 and vertexes[0].started.nanos == 250_000_000
        assert vertexes[-1].completed.seconds == 3
        logs = [log for m in messages for log in m.logs]
        assert [(log.vertex, log.stream, log.msg) for log in logs] == [(DIGEST, 2, b"hello\n")]
        statuses = [s for m in messages for s in m.statuses]
        assert [(s.id, s.current, s.total) for s in statuses] == [("extracting", 3, 9)]
        warnings = [w for m in messages for w in m.warnings]
        assert [(w.short, w.url, w.level) for w in warnings] == [(b"careful", "https://x", 1)]

    run(body, tmp_path)


def test_status_after_the_build_replays_it_and_unknown_ref_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(srv, "STATUS_WAIT", 0.05)

    async def body(channel: Any, controller: FakeController) -> None:
        controller.gate.set()
        request = cpb.SolveRequest(ref="done", definition=definition())
        await unary(channel, methods.CONTROL_SOLVE, request, cpb.SolveResponse)
        _, messages = await stream_all(
            channel, methods.CONTROL_STATUS, cpb.StatusRequest(ref="done"), cpb.StatusResponse
        )
        assert sum(len(m.vertexes) for m in messages) == 2
        assert sum(len(m.logs) for m in messages) == 1
        with pytest.raises(GRPCError) as info:
            await stream_all(
                channel, methods.CONTROL_STATUS, cpb.StatusRequest(ref="nope"), cpb.StatusResponse
            )
        assert info.value.status == Status.NOT_FOUND
        assert "no such job nope" in (info.value.message or "")

    run(body, tmp_path)


def _expect(status: Status, text: str) -> Callable[[GRPCError], None]:
    def check(err: GRPCError) -> None:
        assert err.status == status, (err.status, err.message)
        assert text in (err.message or ""), err.message

    return check


def test_solve_requests_that_cannot_run_are_refused_before_any_work(tmp_path: Path) -> None:
    async def body(channel: Any, controller: FakeController) -> None:
        cases: list[tuple[cpb.SolveRequest, Status, str, type[Exception] | None]] = [
            (
                cpb.SolveRequest(ref="a", definition=definition(), frontend="dockerfile.v0"),
                Status.INVALID_ARGUMENT,
                "Solve a: Frontend and Definition are mutually exclusive",
                DefinitionError,
            ),
            (
                cpb.SolveRequest(ref="b"),
                Status.UNIMPLEMENTED,
                "gateway forwarder",
                None,
            ),
            (
                cpb.SolveRequest(
                    ref="c", definition=definition(), exporter="local", exporter_attrs={}
                ),
                Status.UNKNOWN,
                "exporter 'local' writes on the client side",
                ExportError,
            ),
            (
                cpb.SolveRequest(ref="d", definition=definition(), entitlements=["network.host"]),
                Status.UNKNOWN,
                "granting entitlement network.host is not allowed",
                None,
            ),
            (
                cpb.SolveRequest(
                    ref="f",
                    definition=definition(),
                    cache=cpb.CacheOptions(
                        exports=[cpb.CacheOptionsEntry(type="registry", attrs={"ref": "r/c"})]
                    ),
                ),
                Status.UNIMPLEMENTED,
                "cache export (type=registry) is not supported by bkcore daemon; "
                "build without --export-cache",
                None,
            ),
            (
                cpb.SolveRequest(ref="e", definition=pb.Definition(def_=[b"\xff\xff"])),
                Status.INVALID_ARGUMENT,
                "Solve e: truncated or corrupt LLB definition",
                DefinitionError,
            ),
        ]
        for request, status, text, cls in cases:
            with pytest.raises(GRPCError) as info:
                await unary(channel, methods.CONTROL_SOLVE, request, cpb.SolveResponse)
            _expect(status, text)(info.value)
            if cls is not None:
                assert isinstance(from_grpc_error(info.value), cls)
        assert controller.calls == []

    run(body, tmp_path)


def test_definition_whose_input_is_not_in_it_is_invalid_argument(tmp_path: Path) -> None:
    """Ops are keyed by the digest of their bytes, so a cycle can only show up as an input
    naming an op the definition does not hold (A -> B -> A means one of them names a digest
    nobody has): refused as a bad definition, nothing built."""
    from bkcore.llb.digest import marshal

    async def body(channel: Any, controller: FakeController) -> None:
        dangling = pb.Op(inputs=[pb.Input(digest="sha256:" + "0" * 64, index=0)])
        source = llb.scratch().file(llb.mkfile("/f", 0o644, b"x")).marshal().to_bytes()
        ops = [*pb.Definition().parse(source).def_, marshal(dangling)]
        request = cpb.SolveRequest(ref="cyc", definition=pb.Definition(def_=ops))
        with pytest.raises(GRPCError) as info:
            await unary(channel, methods.CONTROL_SOLVE, request, cpb.SolveResponse)
        assert info.value.status == Status.INVALID_ARGUMENT
        assert (info.value.message or "").startswith("Solve cyc:")
        assert controller.calls == []

    run(body, tmp_path)


async def raw_unary(channel: Any, path: str, frame: bytes) -> GRPCError | None:
    """Send ``frame`` (already framed) as the request body of a unary call."""
    async with channel.request(path, Cardinality.UNARY_UNARY, bytes, bytes) as s:
        await s.send_request()
        await s._stream.send_data(frame, end_stream=True)
        s._send_message_done = s._end_done = True  # sent by hand, past grpclib's framing
        try:
            await s.recv_message()
            await s.recv_trailing_metadata()
        except GRPCError as err:
            return err
    return None


def test_bad_bodies_are_answered_with_a_status_and_serving_goes_on(tmp_path: Path) -> None:
    async def body(channel: Any, _: FakeController) -> None:
        # betterproto alone would read these as an empty request / ref "ab".
        for path, garbage, name in (
            (methods.CONTROL_INFO, b"\xff\xff\xff", "InfoRequest"),
            (methods.CONTROL_SOLVE, b"\x0a\x64ab", "SolveRequest"),
        ):
            err = await raw_unary(channel, path, struct.pack(">?I", False, len(garbage)) + garbage)
            assert err is not None and err.status == Status.INVALID_ARGUMENT
            assert (err.message or "").startswith(f"malformed {name} message: ")
        # A header announcing 1 GiB: refused from the header, the body is never read.
        err = await raw_unary(
            channel, methods.CONTROL_SOLVE, struct.pack(">?I", False, 1 << 30) + b"x" * 10
        )
        assert err is not None and err.status == Status.RESOURCE_EXHAUSTED
        assert "larger than max (1073741824 vs. 4096)" in (err.message or "")
        err = await raw_unary(channel, methods.CONTROL_INFO, struct.pack(">?I", True, 0))
        assert err is not None and err.status == Status.UNIMPLEMENTED
        info = await unary(channel, methods.CONTROL_INFO, cpb.InfoRequest(), cpb.InfoResponse)
        assert info.buildkit_version.package == "bkcore"

    run(body, tmp_path, max_recv=4096)


def test_disk_usage_and_prune_of_a_store_that_does_not_exist(tmp_path: Path) -> None:
    async def body(channel: Any, _: FakeController) -> None:
        du = await unary(
            channel, methods.CONTROL_DISK_USAGE, cpb.DiskUsageRequest(), cpb.DiskUsageResponse
        )
        assert du.record == []
        _, removed = await stream_all(
            channel, methods.CONTROL_PRUNE, cpb.PruneRequest(all=True), cpb.UsageRecord
        )
        assert removed == []
        with pytest.raises(GRPCError) as info:
            await unary(
                channel,
                methods.CONTROL_DISK_USAGE,
                cpb.DiskUsageRequest(filter=["description~=("]),
                cpb.DiskUsageResponse,
            )
        assert info.value.status == Status.INVALID_ARGUMENT
        assert not (tmp_path / "metadata.db").exists()  # nothing was created

    run(body, tmp_path)


def test_history_and_session_methods_are_unimplemented_not_crashes(tmp_path: Path) -> None:
    async def body(channel: Any, _: FakeController) -> None:
        with pytest.raises(GRPCError) as info:
            await unary(
                channel,
                methods.CONTROL_UPDATE_BUILD_HISTORY,
                cpb.UpdateBuildHistoryRequest(ref="x"),
                cpb.UpdateBuildHistoryResponse,
            )
        assert info.value.status == Status.UNIMPLEMENTED

    run(body, tmp_path)


def test_entitlements_the_daemon_allows_reach_the_build(tmp_path: Path) -> None:
    async def body(channel: Any, controller: FakeController) -> None:
        controller.gate.set()
        request = cpb.SolveRequest(
            ref="ent", definition=definition(), entitlements=["network.host"]
        )
        await unary(channel, methods.CONTROL_SOLVE, request, cpb.SolveResponse)
        (options,) = controller.calls
        assert options.entitlements == frozenset({"network.host"})
        refused = cpb.SolveRequest(
            ref="ent2", definition=definition(), entitlements=["security.insecure"]
        )
        with pytest.raises(GRPCError) as info:
            await unary(channel, methods.CONTROL_SOLVE, refused, cpb.SolveResponse)
        assert "granting entitlement security.insecure is not allowed" in (info.value.message or "")

    run(body, tmp_path, allowed_entitlements=frozenset({"network.host"}))
