"""The daemon's ``moby.buildkit.v1.frontend.LLBBridge`` service (spec/gateway.md §1).

A ``Control.Solve`` with neither ``Definition`` nor ``Frontend`` is a *forwarded* build
("gateway forwarder", gateway.md §1): the daemon starts a solver job with an in-process
:class:`~bkcore.bridge.LLBBridge` and registers it under ``SolveRequest.Ref`` in
:class:`Forwarders`; the client then drives the build with LLBBridge calls on the daemon's
socket, each carrying the header ``buildkit-controlapi-buildid: <Ref>`` (a call waits up to
:data:`REGISTER_WAIT` seconds for the registration, as BuildKit does), and ends it with
``Return{result}`` or ``Return{error}``. The ``Control.Solve`` waiting in
:func:`forwarded_build` then exports the returned result (or fails with the returned error).

:class:`LLBBridgeServicer` is a grpclib servable:

* ``Ping``: the frontend API caps and LLB caps bkcore implements, and the worker record.
* ``Solve``: a ``Definition`` or a nested ``Frontend`` through the build's bridge. Every
  result gets an id (its result id) kept by the build until it ends; the reply is
  ``Result{ref: Ref{id, def}}`` (``refs`` by platform for multi-platform frontends) when
  ``allowResultReturn`` is set, else the deprecated ``SolveResponse.ref``. Solves are eager:
  ``Evaluate`` only checks the id.
* ``ReadFile`` / ``ReadDir`` / ``StatFile`` by ref id, resolved inside the ref's root like a
  chroot (``..``, absolute paths and symlinks never leave it).
* ``ResolveImageConfig`` (registry, or OCI layout store with ``ResolverType = 1``),
  ``Inputs`` (the Solve's ``FrontendInputs``), ``Warn`` (a warning on the build's progress).
* ``NewContainer`` / ``ReleaseContainer`` / ``ExecProcess``: UNIMPLEMENTED (no interactive
  containers in bkcore).

Errors leave as the statuses of :mod:`bkcore.api.errors`; a missing build id header is
INVALID_ARGUMENT, an unknown build NOT_FOUND (``no such job``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpclib.const
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from bkcore.api import methods
from bkcore.api.errors import to_grpc_error
from bkcore.api.pb import gateway as gpb

if TYPE_CHECKING:
    import grpclib.server

    from bkcore.bridge import LLBBridge
    from bkcore.controller import BuildOptions, BuildResponse, Controller
    from bkcore.frontend import BuildResult, FileStat
    from bkcore.llb import pb
    from bkcore.progress import ProgressStream
    from bkcore.solver.types import Result

__all__ = [
    "FRONTEND_CAPS",
    "LLB_CAPS",
    "REGISTER_WAIT",
    "Forwarder",
    "Forwarders",
    "LLBBridgeServicer",
    "forwarded_build",
    "solve_response",
]

#: How long an LLBBridge call waits for the Control.Solve that registers its build id.
REGISTER_WAIT = 3.0

#: Frontend API caps bkcore serves (gateway.md §1); the interactive ``gateway.exec*`` caps
#: are answered disabled.
FRONTEND_CAPS: tuple[str, ...] = (
    "solve.base",
    "solve.inlinereturn",
    "resolveimage",
    "resolveimage.resolvemode",
    "readfile",
    "return",
    "returnmap",
    "readdir",
    "statfile",
    "importcaches",
    "proto.refarray",
    "reference.output",
    "frontend.inputs",
    "gateway.solve.metadata",
    "frontend.caps",
    "gateway.solve.evaluate",
    "gateway.evaluate",
    "gateway.warnings",
)
#: Caps buildkitd v0.11.6 marks deprecated (still enabled).
_DEPRECATED_CAPS = frozenset({"solve.inlinereturn"})
_DISABLED_CAPS: tuple[str, ...] = (
    "gateway.exec",
    "gateway.exec.extrahosts",
    "gateway.exec.signals",
    "reference.attestations",
)
#: LLB caps of v0.11.6 (spec/llb.md §8), upstream spelling.
LLB_CAPS: tuple[str, ...] = (
    "source.image",
    "source.image.resolvemode",
    "source.image.layerlimit",
    "source.local",
    "source.local.unique",
    "source.local.sessionid",
    "source.local.includepatterns",
    "source.local.followpaths",
    "source.local.excludepatterns",
    "source.local.sharedkeyhint",
    "source.local.differ",
    "source.git",
    "source.git.keepgitdir",
    "source.git.fullurl",
    "source.git.httpauth",
    "source.git.knownsshhosts",
    "source.git.mountsshsock",
    "source.git.subdir",
    "source.http",
    "source.http.checksum",
    "source.http.perm",
    "soruce.http.uidgid",
    "source.ocilayout",
    "source.buildop.llbfilename",
    "exec.meta.base",
    "exec.meta.cgroup.parent",
    "exec.meta.network",
    "exec.meta.proxyenv",
    "exec.meta.security",
    "exec.meta.security.devices.v1",
    "exec.meta.setsdefaultpath",
    "exec.meta.ulimit",
    "exec.meta.removemountstubs.recursive",
    "exec.mount.bind",
    "exec.mount.bind.readwrite-nooutput",
    "exec.mount.cache",
    "exec.mount.cache.sharing",
    "exec.mount.selector",
    "exec.mount.tmpfs",
    "exec.mount.tmpfs.size",
    "exec.mount.secret",
    "exec.mount.ssh",
    "exec.cgroup",
    "exec.secretenv",
    "file.base",
    "file.rm.wildcard",
    "file.copy.includeexcludepatterns",
    "file.rm.nofollowsymlink",
    "constraints",
    "platform",
    "meta.ignorecache",
    "meta.description",
    "meta.exportcache",
    "mergeop",
    "diffop",
    "exporter.image.annotations",
    "exporter.sourcedateepoch",
)


@dataclass(eq=False)
class Forwarder:
    """One forwarded build: its bridge (set when the solver job runs), the refs handed out
    by id, the ``FrontendInputs`` of its Solve, and the future the client's Return fills."""

    ref: str
    inputs: Mapping[str, pb.Definition] = field(default_factory=dict)
    bridge: LLBBridge | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    returned: asyncio.Future[BuildResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    refs: dict[str, Result] = field(default_factory=dict)

    def keep(self, result: Result | None) -> str:
        """The id a client uses for ``result`` (``""`` for the empty result)."""
        if result is None:
            return ""
        self.refs.setdefault(result.id, result)
        return result.id

    def lookup(self, ref_id: str) -> Result | None:
        if not ref_id:
            return None
        try:
            return self.refs[ref_id]
        except KeyError:
            raise GRPCError(Status.NOT_FOUND, f"build {self.ref}: no such ref {ref_id!r}") from None


class Forwarders:
    """The forwarded builds of a daemon, by build id (``SolveRequest.Ref``)."""

    def __init__(self) -> None:
        self._by_ref: dict[str, Forwarder] = {}
        self._waiters: dict[str, asyncio.Event] = {}

    @contextlib.asynccontextmanager
    async def register(
        self, ref: str, inputs: Mapping[str, pb.Definition] | None = None
    ) -> AsyncIterator[Forwarder]:
        if not ref:
            raise GRPCError(Status.INVALID_ARGUMENT, "a forwarded build needs a Ref")
        if ref in self._by_ref:
            raise GRPCError(Status.ALREADY_EXISTS, f"job ID {ref} exists")
        forwarder = Forwarder(ref, dict(inputs or {}))
        self._by_ref[ref] = forwarder
        self._waiters.pop(ref, asyncio.Event()).set()
        try:
            yield forwarder
        finally:
            if self._by_ref.get(ref) is forwarder:
                del self._by_ref[ref]
            if not forwarder.returned.done():
                forwarder.returned.cancel()

    async def get(self, ref: str, wait: float | None = None) -> Forwarder:
        """The build ``ref`` once its bridge runs (waits ``wait`` s, default
        :data:`REGISTER_WAIT`, for it to register)."""
        if wait is None:
            wait = REGISTER_WAIT
        forwarder = self._by_ref.get(ref)
        if forwarder is None:
            waiter = self._waiters.setdefault(ref, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), wait)
            if self._waiters.get(ref) is waiter and not waiter.is_set():
                del self._waiters[ref]
            forwarder = self._by_ref.get(ref)
            if forwarder is None:
                raise GRPCError(Status.NOT_FOUND, f"no such job {ref}")
        await forwarder.ready.wait()
        return forwarder


async def forwarded_build(
    controller: Controller,
    options: BuildOptions,
    ref: str,
    forwarders: Forwarders,
    *,
    progress: ProgressStream | None = None,
) -> BuildResponse:
    """Run the forwarded build ``ref``: a build job whose bridge the client drives over
    LLBBridge until it calls Return; export the returned result with ``options.outputs``.
    The build's session is ``options.session`` (the client's), else an in-process one."""
    from bkcore.controller import BuildResponse

    async with (
        controller.build_job(options, progress=progress) as build,
        forwarders.register(ref, options.frontend_inputs) as forwarder,
    ):
        forwarder.bridge = build.bridge()
        forwarder.ready.set()
        result = await forwarder.returned
        response = await build.export(result.ref, metadata=result.metadata, refs=result.refs)
    return BuildResponse(solve_response(response, result.metadata))


#: The build-info key of a result's metadata and of BuildKit's Solve response.
BUILDINFO = "containerimage.buildinfo"


def solve_response(exported: Mapping[str, str], metadata: Mapping[str, bytes]) -> dict[str, str]:
    """The Control.Solve response of a build as buildkitd makes it: the exporters' response,
    then the result's ``frontend.*`` metadata (as text) and build info (base64; ``{}`` when
    the build recorded none), whatever the exporter (buildctl --metadata-file writes it)."""
    import base64

    out = dict(exported)
    for key, value in metadata.items():
        if key.startswith("frontend."):
            out[key] = value.decode("utf-8", "replace")
        elif key.startswith(BUILDINFO):
            out[key] = base64.b64encode(value).decode("ascii")
    out.setdefault(BUILDINFO, base64.b64encode(b"{}").decode("ascii"))
    return out


# -- conversions ------------------------------------------------------------------------------


def _platform_text(platform: pb.Platform | None) -> str | None:
    if platform is None or not platform.os:
        return None
    parts = [platform.os, platform.architecture]
    if platform.variant:
        parts.append(platform.variant)
    return "/".join(parts)


def _stat(entry: FileStat) -> Any:
    from bkcore.api.pb import fsutil

    return fsutil.Stat(
        path=entry.path,
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        size=entry.size,
        mod_time=entry.mod_time,
        linkname=entry.linkname,
    )


def _reply_result(forwarder: Forwarder, result: BuildResult, definition: Any) -> gpb.Result:
    out = gpb.Result(metadata=dict(result.metadata))
    if result.refs is not None:
        out.refs = gpb.RefMap(
            refs={key: gpb.Ref(id=forwarder.keep(value)) for key, value in result.refs.items()}
        )
    else:
        ref = gpb.Ref(id=forwarder.keep(result.ref))
        if definition is not None and definition.def_:
            ref.def_ = definition
        out.ref = ref
    return out


def _returned_result(forwarder: Forwarder, message: gpb.Result) -> BuildResult:
    import betterproto

    from bkcore.frontend import BuildResult

    metadata = dict(message.metadata)
    kind, found = betterproto.which_one_of(message, "result")
    value: Any = found
    if kind == "refs":
        refs = {k: forwarder.lookup(v.id) for k, v in value.refs.items()}
        return BuildResult(refs=refs, metadata=metadata)
    if kind == "refs_deprecated":
        refs = {k: forwarder.lookup(v) for k, v in value.refs.items()}
        return BuildResult(refs=refs, metadata=metadata)
    if kind == "ref":
        return BuildResult(ref=forwarder.lookup(value.id), metadata=metadata)
    ref_id = str(value) if kind == "ref_deprecated" else ""
    return BuildResult(ref=forwarder.lookup(ref_id), metadata=metadata)


# -- the servicer -----------------------------------------------------------------------------

_Call = Callable[[Forwarder, Any], Awaitable[Any]]


class LLBBridgeServicer:
    """``moby.buildkit.v1.frontend.LLBBridge`` for the forwarded builds in ``forwarders``."""

    def __init__(
        self, controller: Controller, forwarders: Forwarders, *, max_recv: int = 4 << 20
    ) -> None:
        self.controller = controller
        self.forwarders = forwarders
        #: request size limit (grpc-go's default, as the Control service's)
        self.max_recv = max_recv

    def _unary(self, request_type: Any, call: _Call) -> Callable[[Any], Awaitable[None]]:
        async def handler(stream: grpclib.server.Stream[Any, Any]) -> None:
            from bkcore.api.codec import recv_limited

            build_id = stream.metadata.get(methods.BUILD_ID) if stream.metadata else None
            request = await recv_limited(stream, request_type, self.max_recv)
            if not build_id:
                raise GRPCError(
                    Status.INVALID_ARGUMENT,
                    f"LLBBridge call without the {methods.BUILD_ID} header "
                    "(no build to forward to)",
                )
            forwarder = await self.forwarders.get(str(build_id))
            try:
                response = await call(forwarder, request)
            except GRPCError:
                raise
            except Exception as exc:
                raise to_grpc_error(exc) from exc
            await stream.send_message(response)

        return handler

    @staticmethod
    async def _no_containers(stream: grpclib.server.Stream[Any, Any]) -> None:
        raise GRPCError(
            Status.UNIMPLEMENTED,
            "interactive containers (NewContainer/ExecProcess) are not supported by bkcore",
        )

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        card = grpclib.const.Cardinality
        H = grpclib.const.Handler
        base = "/" + methods.LLBBRIDGE + "/"
        unary: dict[str, tuple[Any, Any, _Call]] = {
            "ResolveImageConfig": (
                gpb.ResolveImageConfigRequest,
                gpb.ResolveImageConfigResponse,
                self.resolve_image_config,
            ),
            "Solve": (gpb.SolveRequest, gpb.SolveResponse, self.solve),
            "ReadFile": (gpb.ReadFileRequest, gpb.ReadFileResponse, self.read_file),
            "ReadDir": (gpb.ReadDirRequest, gpb.ReadDirResponse, self.read_dir),
            "StatFile": (gpb.StatFileRequest, gpb.StatFileResponse, self.stat_file),
            "Evaluate": (gpb.EvaluateRequest, gpb.EvaluateResponse, self.evaluate),
            "Ping": (gpb.PingRequest, gpb.PongResponse, self.ping),
            "Return": (gpb.ReturnRequest, gpb.ReturnResponse, self.return_),
            "Inputs": (gpb.InputsRequest, gpb.InputsResponse, self.inputs),
            "Warn": (gpb.WarnRequest, gpb.WarnResponse, self.warn),
        }
        out = {
            base + name: H(self._unary(req, call), card.UNARY_UNARY, req, resp)
            for name, (req, resp, call) in unary.items()
        }
        out[base + "NewContainer"] = H(
            self._no_containers,
            card.UNARY_UNARY,
            gpb.NewContainerRequest,
            gpb.NewContainerResponse,
        )
        out[base + "ReleaseContainer"] = H(
            self._no_containers,
            card.UNARY_UNARY,
            gpb.ReleaseContainerRequest,
            gpb.ReleaseContainerResponse,
        )
        out[base + "ExecProcess"] = H(
            self._no_containers, card.STREAM_STREAM, gpb.ExecMessage, gpb.ExecMessage
        )
        return out

    # -- methods ------------------------------------------------------------------------------

    def _worker_record(self) -> Any:
        from bkcore.api.pb import worker as wpb
        from bkcore.llb import pb

        info = self.controller.engine.worker.info()
        platforms = []
        for text in info.platforms:
            parts = text.split("/")
            platforms.append(
                pb.Platform(
                    os=parts[0],
                    architecture=parts[1] if len(parts) > 1 else "",
                    variant=parts[2] if len(parts) > 2 else "",
                )
            )
        return wpb.WorkerRecord(
            id=info.id, labels=dict(sorted(info.labels.items())), platforms=platforms
        )

    async def ping(self, forwarder: Forwarder, request: gpb.PingRequest) -> gpb.PongResponse:
        from bkcore.api.pb import apicaps

        frontend = [apicaps.ApiCap(id=c, enabled=True) for c in FRONTEND_CAPS]
        frontend += [
            apicaps.ApiCap(
                id=c,
                enabled=False,
                disabled_reason="unsupported",
                disabled_reason_msg=f"{c} is not supported by bkcore",
            )
            for c in _DISABLED_CAPS
        ]
        for cap in frontend:
            cap.deprecated = cap.id in _DEPRECATED_CAPS
        llb = [apicaps.ApiCap(id=c, enabled=True) for c in LLB_CAPS]
        # sorted by id, as buildkitd lists them
        frontend.sort(key=lambda c: c.id)
        llb.sort(key=lambda c: c.id)
        return gpb.PongResponse(
            frontend_api_caps=frontend, llb_caps=llb, workers=[self._worker_record()]
        )

    async def solve(self, forwarder: Forwarder, request: gpb.SolveRequest) -> gpb.SolveResponse:
        bridge = _bridge(forwarder)
        has_definition = bool(request.definition.def_)
        if request.frontend and has_definition:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"build {forwarder.ref}: Solve: Frontend and Definition are mutually exclusive",
            )
        result = await bridge.solve(
            request.definition if has_definition else None,
            frontend=request.frontend,
            frontend_opts=dict(request.frontend_opt),
            frontend_inputs=dict(request.frontend_inputs),
        )
        if request.allow_result_return:
            if result.refs is not None and not request.allow_result_array_ref:
                raise GRPCError(
                    Status.FAILED_PRECONDITION,
                    f"build {forwarder.ref}: a multi-platform result needs allowResultArrayRef",
                )
            reply = _reply_result(forwarder, result, request.definition if has_definition else None)
            return gpb.SolveResponse(result=reply)
        if result.refs is not None:
            raise GRPCError(
                Status.FAILED_PRECONDITION,
                f"build {forwarder.ref}: a multi-platform result needs allowResultReturn",
            )
        return gpb.SolveResponse(ref=forwarder.keep(result.ref))

    async def read_file(
        self, forwarder: Forwarder, request: gpb.ReadFileRequest
    ) -> gpb.ReadFileResponse:
        bridge = _bridge(forwarder)
        offset, length = 0, None
        if request.range is not None and (request.range.offset or request.range.length):
            offset = request.range.offset
            length = request.range.length if request.range.length > 0 else None
        if offset < 0:
            raise GRPCError(Status.INVALID_ARGUMENT, f"ReadFile: negative offset {offset}")
        data = await bridge.read_file(
            forwarder.lookup(request.ref), request.file_path, offset=offset, length=length
        )
        return gpb.ReadFileResponse(data=data)

    async def read_dir(
        self, forwarder: Forwarder, request: gpb.ReadDirRequest
    ) -> gpb.ReadDirResponse:
        bridge = _bridge(forwarder)
        entries = await bridge.read_dir(
            forwarder.lookup(request.ref),
            request.dir_path,
            include_pattern=request.include_pattern,
        )
        return gpb.ReadDirResponse(entries=[_stat(e) for e in entries])

    async def stat_file(
        self, forwarder: Forwarder, request: gpb.StatFileRequest
    ) -> gpb.StatFileResponse:
        bridge = _bridge(forwarder)
        entry = await bridge.stat_file(forwarder.lookup(request.ref), request.path)
        return gpb.StatFileResponse(stat=_stat(entry))

    async def evaluate(
        self, forwarder: Forwarder, request: gpb.EvaluateRequest
    ) -> gpb.EvaluateResponse:
        forwarder.lookup(request.ref)  # solved eagerly: only check that the ref exists
        return gpb.EvaluateResponse()

    async def resolve_image_config(
        self, forwarder: Forwarder, request: gpb.ResolveImageConfigRequest
    ) -> gpb.ResolveImageConfigResponse:
        bridge = _bridge(forwarder)
        platform = _platform_text(request.platform)
        if request.resolver_type == 1:
            digest, config = await bridge.resolve_oci_layout_config(
                request.ref,
                store_id=request.store_id,
                session_id=request.session_id,
                platform=platform,
            )
        else:
            digest, config = await bridge.resolve_image_config(
                request.ref, platform=platform, resolve_mode=request.resolve_mode or "default"
            )
        return gpb.ResolveImageConfigResponse(digest=digest, config=config)

    async def inputs(self, forwarder: Forwarder, request: gpb.InputsRequest) -> gpb.InputsResponse:
        return gpb.InputsResponse(definitions=dict(forwarder.inputs))

    async def warn(self, forwarder: Forwarder, request: gpb.WarnRequest) -> gpb.WarnResponse:
        bridge = _bridge(forwarder)
        line = 0
        if request.ranges and request.ranges[0].start is not None:
            line = request.ranges[0].start.line
        bridge.warn(
            request.digest,
            request.short.decode("utf-8", "replace"),
            detail=[d.decode("utf-8", "replace") for d in request.detail],
            line=line,
        )
        return gpb.WarnResponse()

    async def return_(self, forwarder: Forwarder, request: gpb.ReturnRequest) -> gpb.ReturnResponse:
        from bkcore.api.errors import from_details, strip_go_code

        if forwarder.returned.done():
            raise GRPCError(
                Status.FAILED_PRECONDITION, f"build {forwarder.ref}: result already returned"
            )
        if request.error is not None and request.error.code:
            error = request.error
            forwarder.returned.set_exception(
                from_details(
                    error.code, strip_go_code(error.code, error.message), list(error.details)
                )
            )
        else:
            result = request.result if request.result is not None else gpb.Result()
            forwarder.returned.set_result(_returned_result(forwarder, result))
        return gpb.ReturnResponse()


def _bridge(forwarder: Forwarder) -> LLBBridge:
    if forwarder.bridge is None or forwarder.returned.done():
        raise GRPCError(
            Status.FAILED_PRECONDITION, f"build {forwarder.ref} has already returned its result"
        )
    return forwarder.bridge
