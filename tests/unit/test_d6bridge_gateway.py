"""LLBBridgeServicer over an in-memory grpclib channel (GoCodec, status details) driving a
forwarded build started by :func:`bkcore.api.gateway.forwarded_build` with a controller
stand-in: the real in-process LLBBridge reads refs (a fake snapshot store maps ref ids to
directories), solves are answered by a stand-in solver; the client's Return is what the build
exports, a returned error is the build's error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from bkcore import llb
from bkcore.api import gateway, methods
from bkcore.api.codec import GoCodec
from bkcore.api.errors import StatusDetailsCodec, details_of, encode_details, to_status
from bkcore.api.pb import gateway as gpb
from bkcore.api.pb import status as rpc
from bkcore.bridge import LLBBridge
from bkcore.controller import BuildOptions, BuildResponse
from bkcore.errors import FrontendError
from bkcore.frontend import BuildResult
from bkcore.llb import pb
from bkcore.progress import ProgressStream, WarningEvent
from bkcore.worker import WorkerInfo

BUILDINFO = "containerimage.buildinfo"  # in every Solve response, as buildkitd's

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
REF = "buildref1"


@dataclass
class FakeResult:
    id: str
    released: int = 0

    def clone(self) -> FakeResult:
        return self

    async def release(self) -> None:
        self.released += 1


class FakeSnapshots:
    def __init__(self, roots: Mapping[str, Path]) -> None:
        self.roots = roots

    @contextlib.contextmanager
    def view(self, ref_id: str) -> Iterator[Path]:
        yield self.roots[ref_id]


class FakeRegistry:
    def __init__(self, targets: Mapping[str, Any]) -> None:
        self.targets = dict(targets)

    def __contains__(self, key: object) -> bool:
        return key in self.targets

    def keys(self) -> list[str]:
        return list(self.targets)

    def load(self, key: str) -> Any:
        return self.targets[key]


class FakePlugins:
    def __init__(self, **families: Mapping[str, Any]) -> None:
        self.families = {k: FakeRegistry(v) for k, v in families.items()}

    def registry(self, family: str) -> FakeRegistry:
        return self.families.get(family, FakeRegistry({}))


class FakeWorker:
    name = "w"

    def info(self) -> WorkerInfo:
        return WorkerInfo(id="worker1", platforms=("linux/amd64",), labels={"a": "1"})


class Sessions:
    def __init__(self) -> None:
        self.attached: list[str] = []
        self.unregistered: list[str] = []

    def attach(self, session: Any) -> None:
        self.attached.append(session.id)

    def unregister(self, session_id: str) -> None:
        self.unregistered.append(session_id)


class FakeController:
    """What forwarded_build uses of a Controller; solves build a fresh FakeResult per
    definition (the definition's first op bytes name the snapshot directory)."""

    def __init__(self, roots: Mapping[str, Path], frontends: Mapping[str, Any]) -> None:
        self.plugins = FakePlugins(exporters={"fake": object()}, frontends=frontends)
        self.engine: Any = SimpleNamespace(
            plugins=self.plugins,
            platform="linux/amd64",
            worker=FakeWorker(),
            store=SimpleNamespace(snapshots=FakeSnapshots(roots)),
            sessions=Sessions(),
        )
        self.exported: list[tuple[Any, Mapping[str, bytes] | None, Any]] = []

        class Solver:
            @contextlib.asynccontextmanager
            async def job(self, **kwargs: Any) -> Any:
                yield SimpleNamespace(values=kwargs["values"])

        self.solver = Solver()

    def _session(self, options: BuildOptions) -> Any:
        return SimpleNamespace(id="session-1", caller=lambda: None)

    @contextlib.asynccontextmanager
    async def build_job(
        self, options: BuildOptions, *, progress: ProgressStream | None = None
    ) -> AsyncIterator[Any]:
        """Controller.build_job's contract: an in-process session attached for the build
        and unregistered, the bridge's refs released, however the block ends."""
        from bkcore.controller import BuildJob

        stream = progress if progress is not None else ProgressStream()
        session = self._session(options)
        self.engine.sessions.attach(session)
        try:
            values = {"session": session.id, "no_cache": options.no_cache}
            async with self.solver.job(progress=stream, values=values) as job:
                build = BuildJob(self, options, job, session.id, session.caller(), stream)  # type: ignore[arg-type]
                try:
                    yield build
                finally:
                    await build._release()
        finally:
            self.engine.sessions.unregister(session.id)

    async def _export(
        self,
        outputs: Any,
        result: Any,
        session: Any,
        stream: Any,
        *,
        metadata: Mapping[str, bytes] | None = None,
        refs: Any = None,
    ) -> dict[str, str]:
        self.exported.append((result, metadata, refs))
        return {"exported": result.id if result is not None else ""}


class FakeBridgeSolve:
    """Patches LLBBridge.solve for definitions: the result is named by the first op's
    file action (mkfile path without '/'), standing in for the solver."""

    def __init__(self) -> None:
        self.results: list[FakeResult] = []

    async def __call__(
        self,
        bridge: LLBBridge,
        definition: pb.Definition | None = None,
        *,
        frontend: str = "",
        frontend_opts: Mapping[str, str] | None = None,
        frontend_inputs: Mapping[str, pb.Definition] | None = None,
    ) -> BuildResult:
        if frontend:
            return await LLBBridge._run_frontend(
                bridge, frontend, frontend_opts or {}, frontend_inputs or {}
            )
        if definition is None:
            return BuildResult(ref=None)
        op = pb.Op().parse(definition.def_[0])
        name = op.file.actions[0].mkfile.path.strip("/")
        result = FakeResult(name)
        self.results.append(result)
        bridge._own(result)
        return BuildResult(ref=result)


def definition(name: str) -> pb.Definition:
    data = llb.scratch().file(llb.mkfile("/" + name, 0o644, b"x")).marshal().to_bytes()
    return pb.Definition().parse(data)


Body = Callable[[Any, FakeController, "asyncio.Task[BuildResponse]"], Awaitable[None]]


def run(
    body: Body,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    frontends: Mapping[str, Any] | None = None,
    inputs: Mapping[str, pb.Definition] | None = None,
) -> FakeController:
    roots = {"one": tmp_path / "one", "two": tmp_path / "two"}
    for root in roots.values():
        root.mkdir()
    (roots["one"] / "hello.txt").write_bytes(b"0123456789")
    (roots["one"] / "dir").mkdir()
    (roots["one"] / "dir" / "a.go").write_bytes(b"package a")
    (roots["one"] / "dir" / "b.txt").write_bytes(b"bb")
    os.symlink("/hello.txt", roots["one"] / "abs-link")
    os.symlink("../../../../../../etc", roots["one"] / "escape")
    (roots["two"] / "f").write_bytes(b"two")
    (tmp_path / "outside.txt").write_bytes(b"secret")
    solve = FakeBridgeSolve()

    async def solve_method(self: LLBBridge, *args: Any, **kwargs: Any) -> BuildResult:
        return await solve(self, *args, **kwargs)

    monkeypatch.setattr(LLBBridge, "solve", solve_method)
    controller = FakeController(roots, frontends or {})

    async def main() -> None:
        forwarders = gateway.Forwarders()
        servicer = gateway.LLBBridgeServicer(controller, forwarders)  # type: ignore[arg-type]
        options = BuildOptions(
            outputs=(), frontend_inputs=dict(inputs or {}), source=f"Solve {REF}"
        )
        progress = ProgressStream()
        build = asyncio.ensure_future(
            gateway.forwarded_build(
                controller,  # type: ignore[arg-type]
                options,
                REF,
                forwarders,
                progress=progress,
            )
        )
        try:
            async with ChannelFor(
                [servicer], codec=GoCodec(), status_details_codec=StatusDetailsCodec()
            ) as channel:
                await body(channel, controller, build)
        finally:
            if not build.done():
                build.cancel()
            await asyncio.gather(build, return_exceptions=True)

    asyncio.run(main())
    return controller


async def call(
    channel: Any, name: str, request: Any, reply_type: Any, *, build_id: str | None = REF
) -> Any:
    metadata = {methods.BUILD_ID: build_id} if build_id is not None else None
    async with channel.request(
        f"/{methods.LLBBRIDGE}/{name}",
        Cardinality.UNARY_UNARY,
        type(request),
        reply_type,
        metadata=metadata,
    ) as stream:
        await stream.send_message(request, end=True)
        return await stream.recv_message()


async def solve(channel: Any, name: str) -> gpb.Ref:
    reply = await call(
        channel,
        "Solve",
        gpb.SolveRequest(
            definition=definition(name), allow_result_return=True, allow_result_array_ref=True
        ),
        gpb.SolveResponse,
    )
    ref: gpb.Ref = reply.result.ref
    return ref


def test_ping_lists_caps_and_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(channel: Any, controller: FakeController, build: Any) -> None:
        pong = await call(channel, "Ping", gpb.PingRequest(), gpb.PongResponse)
        caps = {c.id: c.enabled for c in pong.frontend_api_caps}
        assert caps["solve.base"] and caps["readfile"] and caps["returnmap"]
        assert caps["proto.refarray"] and caps["frontend.inputs"] and caps["gateway.warnings"]
        assert caps["gateway.exec"] is False
        llb_caps = {c.id for c in pong.llb_caps}
        assert {"source.local", "exec.mount.cache", "soruce.http.uidgid", "mergeop"} <= llb_caps
        assert all(c.enabled for c in pong.llb_caps)
        assert [w.id for w in pong.workers] == ["worker1"]
        assert pong.workers[0].platforms[0].architecture == "amd64"

    run(body, tmp_path, monkeypatch)


def test_solve_read_and_return_exports_the_returned_ref(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(channel: Any, controller: FakeController, build: Any) -> None:
        ref = await solve(channel, "one")
        assert ref.id == "one"
        assert ref.def_.def_ == definition("one").def_  # the definition comes back
        other = await solve(channel, "two")
        read = await call(
            channel,
            "ReadFile",
            gpb.ReadFileRequest(ref="one", file_path="hello.txt"),
            gpb.ReadFileResponse,
        )
        assert read.data == b"0123456789"
        part = await call(
            channel,
            "ReadFile",
            gpb.ReadFileRequest(
                ref="one", file_path="/hello.txt", range=gpb.FileRange(offset=3, length=4)
            ),
            gpb.ReadFileResponse,
        )
        assert part.data == b"3456"
        listing = await call(
            channel,
            "ReadDir",
            gpb.ReadDirRequest(ref="one", dir_path="dir", include_pattern="*.go"),
            gpb.ReadDirResponse,
        )
        assert [e.path for e in listing.entries] == ["a.go"]
        assert listing.entries[0].size == len(b"package a")
        stat = await call(
            channel,
            "StatFile",
            gpb.StatFileRequest(ref="one", path="abs-link"),
            gpb.StatFileResponse,
        )
        assert stat.stat.linkname == "/hello.txt" and stat.stat.mode & (1 << 27)
        # an absolute symlink resolves inside the ref, not on the daemon's host
        via = await call(
            channel,
            "ReadFile",
            gpb.ReadFileRequest(ref="one", file_path="abs-link"),
            gpb.ReadFileResponse,
        )
        assert via.data == b"0123456789"
        await call(channel, "Evaluate", gpb.EvaluateRequest(ref="two"), gpb.EvaluateResponse)
        assert not build.done()
        await call(
            channel,
            "Return",
            gpb.ReturnRequest(result=gpb.Result(ref=other, metadata={"k": b"v"})),
            gpb.ReturnResponse,
        )
        response = await build
        assert response.exporter_response == {"exported": "two", BUILDINFO: "e30="}

    controller = run(body, tmp_path, monkeypatch)
    (result, metadata, refs) = controller.exported[0]
    assert result.id == "two" and metadata == {"k": b"v"} and refs is None
    assert controller.engine.sessions.unregistered == ["session-1"]


@pytest.mark.parametrize(
    "path", ["../outside.txt", "/../../outside.txt", "escape/passwd", "../two/f"]
)
def test_reads_never_leave_the_ref(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    async def body(channel: Any, controller: FakeController, build: Any) -> None:
        await solve(channel, "one")
        with pytest.raises(GRPCError) as info:
            await call(
                channel,
                "ReadFile",
                gpb.ReadFileRequest(ref="one", file_path=path),
                gpb.ReadFileResponse,
            )
        assert info.value.status != Status.OK
        # the build goes on: a good read still works
        ok = await call(
            channel,
            "ReadFile",
            gpb.ReadFileRequest(ref="one", file_path="hello.txt"),
            gpb.ReadFileResponse,
        )
        assert ok.data == b"0123456789"

    run(body, tmp_path, monkeypatch)


def test_unknown_ref_and_refs_after_return(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(channel: Any, controller: FakeController, build: Any) -> None:
        with pytest.raises(GRPCError) as info:
            await call(
                channel,
                "ReadFile",
                gpb.ReadFileRequest(ref="nope", file_path="x"),
                gpb.ReadFileResponse,
            )
        assert info.value.status == Status.NOT_FOUND and "no such ref 'nope'" in str(
            info.value.message
        )
        await call(channel, "Return", gpb.ReturnRequest(result=gpb.Result()), gpb.ReturnResponse)
        assert (await build).exporter_response == {"exported": "", BUILDINFO: "e30="}

    controller = run(body, tmp_path, monkeypatch)
    assert controller.exported[0][0] is None  # an empty result is scratch


def test_returned_error_fails_the_build_with_that_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = FrontendError("Dockerfile:3: unknown instruction: FOO")
    code, message, _ = to_status(error)
    status = rpc.Status().parse(encode_details(code, message, details_of(error)))

    async def body(channel: Any, controller: FakeController, build: Any) -> None:
        await solve(channel, "one")
        await call(channel, "Return", gpb.ReturnRequest(error=status), gpb.ReturnResponse)
        with pytest.raises(FrontendError, match="unknown instruction: FOO"):
            await build
        with pytest.raises(GRPCError) as info:  # the build is gone: no second Return
            await call(
                channel,
                "Return",
                gpb.ReturnRequest(result=gpb.Result()),
                gpb.ReturnResponse,
            )
        assert info.value.status in (Status.NOT_FOUND, Status.FAILED_PRECONDITION)

    controller = run(body, tmp_path, monkeypatch)
    assert controller.exported == []
    assert controller.engine.sessions.unregistered == ["session-1"]


def test_missing_header_and_unknown_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "REGISTER_WAIT", 0.05)

    async def body(channel: Any, controller: FakeController, build: Any) -> None:
        with pytest.raises(GRPCError) as info:
            await call(channel, "Ping", gpb.PingRequest(), gpb.PongResponse, build_id=None)
        assert info.value.status == Status.INVALID_ARGUMENT
        assert methods.BUILD_ID in str(info.value.message)
        with pytest.raises(GRPCError) as info:
            await call(channel, "Ping", gpb.PingRequest(), gpb.PongResponse, build_id="other")
        assert info.value.status == Status.NOT_FOUND
        assert info.value.message == "no such job other"

    run(body, tmp_path, monkeypatch)


def test_a_call_before_the_solve_registers_waits_for_it() -> None:
    async def main() -> None:
        forwarders = gateway.Forwarders()
        waiting = asyncio.ensure_future(forwarders.get("late"))
        await asyncio.sleep(0)
        assert not waiting.done()
        async with forwarders.register("late") as forwarder:
            forwarder.ready.set()
            assert await waiting is forwarder
            with pytest.raises(GRPCError, match="job ID late exists"):
                async with forwarders.register("late"):
                    pass
        with pytest.raises(GRPCError, match="no such job late"):
            await forwarders.get("late", wait=0.01)

    asyncio.run(main())


def test_containers_are_unimplemented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(channel: Any, controller: FakeController, build: Any) -> None:
        with pytest.raises(GRPCError) as info:
            await call(
                channel,
                "NewContainer",
                gpb.NewContainerRequest(container_id="c"),
                gpb.NewContainerResponse,
            )
        assert info.value.status == Status.UNIMPLEMENTED
        assert "not supported by bkcore" in str(info.value.message)

    run(body, tmp_path, monkeypatch)


def test_nested_frontend_inputs_and_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    class Multi:
        async def solve(self, bridge: Any, request: Any) -> BuildResult:
            seen.append(dict(request.opts))
            one = (await bridge.solve(definition("one"))).ref
            two = (await bridge.solve(definition("two"))).ref
            platforms = {"Platforms": [{"ID": "linux/amd64"}, {"ID": "linux/arm64"}]}
            return BuildResult(
                refs={"linux/amd64": one, "linux/arm64": two},
                metadata={"refs.platforms": json.dumps(platforms).encode()},
            )

    async def body(channel: Any, controller: FakeController, build: Any) -> None:
        given = await call(channel, "Inputs", gpb.InputsRequest(), gpb.InputsResponse)
        assert list(given.definitions) == ["base"]
        assert given.definitions["base"].def_ == definition("one").def_
        with pytest.raises(GRPCError) as info:  # an array result needs allowResultArrayRef
            await call(
                channel,
                "Solve",
                gpb.SolveRequest(frontend="multi.v0", allow_result_return=True),
                gpb.SolveResponse,
            )
        assert info.value.status == Status.FAILED_PRECONDITION
        reply = await call(
            channel,
            "Solve",
            gpb.SolveRequest(
                frontend="multi.v0",
                frontend_opt={"target": "x"},
                allow_result_return=True,
                allow_result_array_ref=True,
            ),
            gpb.SolveResponse,
        )
        refs = reply.result.refs.refs
        assert {k: v.id for k, v in refs.items()} == {"linux/amd64": "one", "linux/arm64": "two"}
        await call(
            channel,
            "Warn",
            gpb.WarnRequest(
                digest="sha256:" + "c" * 64,
                level=1,
                short=b"deprecated syntax",
                detail=[b"use X"],
                ranges=[pb.Range(start=pb.Position(line=4))],
            ),
            gpb.WarnResponse,
        )
        await call(
            channel,
            "Return",
            gpb.ReturnRequest(result=gpb.Result(refs=reply.result.refs, metadata={})),
            gpb.ReturnResponse,
        )
        await build

    controller = run(
        body,
        tmp_path,
        monkeypatch,
        frontends={"multi.v0": Multi()},
        inputs={"base": definition("one")},
    )
    assert seen[-1] == {"target": "x"}
    result, _, refs = controller.exported[0]
    assert result is None and {k: v.id for k, v in refs.items()} == {
        "linux/amd64": "one",
        "linux/arm64": "two",
    }


def test_warn_reaches_the_build_progress(tmp_path: Path) -> None:
    events: list[Any] = []

    class Progress:
        def write(self, event: Any) -> None:
            events.append(event)

    async def main() -> None:
        forwarders = gateway.Forwarders()
        controller: Any = SimpleNamespace(engine=SimpleNamespace(worker=FakeWorker()))
        servicer = gateway.LLBBridgeServicer(controller, forwarders)
        engine: Any = SimpleNamespace(plugins=FakePlugins(), platform="linux/amd64")
        bridge = LLBBridge(engine, None, None, session_id="s", progress=Progress())  # type: ignore[arg-type]
        async with forwarders.register("w") as forwarder:
            forwarder.bridge = bridge
            forwarder.ready.set()
            async with ChannelFor([servicer], codec=GoCodec()) as channel:
                await call(
                    channel,
                    "Warn",
                    gpb.WarnRequest(
                        digest="sha256:" + "d" * 64,
                        short=b"careful",
                        detail=[b"more"],
                        ranges=[pb.Range(start=pb.Position(line=7))],
                    ),
                    gpb.WarnResponse,
                    build_id="w",
                )

    asyncio.run(main())
    warnings = [e for e in events if isinstance(e, WarningEvent)]
    assert warnings[0].vertex == "sha256:" + "d" * 64
    assert warnings[0].short == "line 7: careful" and warnings[0].detail == ("more",)


def test_captured_buildctl_bridge_requests_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LLBBridge Ping and Solve bodies buildctl v0.11.6 sent (control_capture.json),
    replayed byte for byte: Solve{Frontend: dockerfile.v0, allowResultReturn,
    allowResultArrayRef} reaches the frontend; Return{} as buildctl sends it ends the build."""
    samples = json.loads((VECTORS / "control_capture.json").read_text())["samples"]
    sent = {
        s["path"]: bytes.fromhex(s["hex"])
        for s in samples
        if s["direction"] == "client->daemon" and "LLBBridge" in s["path"]
    }
    assert set(sent) == {f"/{methods.LLBBRIDGE}/Ping", f"/{methods.LLBBRIDGE}/Solve"}
    calls: list[Any] = []

    class Dockerfile:
        async def solve(self, bridge: Any, request: Any) -> BuildResult:
            calls.append(request)
            got: BuildResult = await bridge.solve(definition("one"))
            return got

    async def raw(channel: Any, path: str, body: bytes) -> bytes:
        async with channel.request(
            path, Cardinality.UNARY_UNARY, bytes, bytes, metadata={methods.BUILD_ID: REF}
        ) as stream:
            await stream.send_message(body, end=True)
            reply: bytes = await stream.recv_message()
            return reply

    class RawCodec(GoCodec):
        def decode(self, data: bytes, message_type: Any) -> Any:
            if message_type is bytes:
                return data
            return super().decode(data, message_type)

    async def body(channel: Any, controller: FakeController, build: Any) -> None:
        raw_channel = channel
        raw_channel._codec = RawCodec()
        pong = gpb.PongResponse().parse(await raw(channel, f"/{methods.LLBBRIDGE}/Ping", b""))
        assert pong.frontend_api_caps
        reply = gpb.SolveResponse().parse(
            await raw(channel, f"/{methods.LLBBRIDGE}/Solve", sent[f"/{methods.LLBBRIDGE}/Solve"])
        )
        assert reply.result.ref.id == "one"
        ret = bytes(gpb.ReturnRequest(result=gpb.Result(ref=gpb.Ref(id="one"))))
        assert await raw(channel, f"/{methods.LLBBRIDGE}/Return", ret) == b""
        assert (await build).exporter_response == {"exported": "one", BUILDINFO: "e30="}

    run(body, tmp_path, monkeypatch, frontends={"dockerfile.v0": Dockerfile()})
    assert calls and calls[0].opts == {}
