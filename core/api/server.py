"""The daemon's ``moby.buildkit.v1.Control`` service over one embedded :class:`Controller`.

:class:`ControlServicer` is a grpclib servable (``__mapping__``) serving control.md §2:

* ``ListWorkers``: the worker's info (id, labels, platforms) plus the daemon's GC policy and
  bkcore's version; ``filter`` as containerd filters over ``id`` and ``labels.<key>``.
* ``Info``: ``BuildkitVersion{package: "bkcore", version}``.
* GC runs in the daemon (:mod:`bkcore.api.daemon`); ListWorkers reports its policies.
* ``DiskUsage`` / ``Prune``: what ``bkcore du`` / ``bkcore prune`` compute, on a store opened
  for the call in a thread (as a second process would), so a running build is never touched.
  ``UsageRecord.Shared`` marks a record that nothing uses directly but that a used snapshot
  sits on (not reclaimable); a client shows ``reclaimable = !InUse && !Shared``. Prune streams
  one record per removed record; ``filter`` limits what may go; keepDuration is in ns,
  keepBytes in bytes.
* ``Solve``: a ``Definition`` (raw LLB) or a ``Frontend`` (``dockerfile.v0``) through the
  controller; ``Exporter``/``ExporterAttrs`` become the output, ``FrontendAttrs`` the frontend
  options, ``FrontendInputs`` its named inputs, ``Entitlements`` are checked against the daemon's
  allowed ones. ``Session`` names the client's ``Control.Session`` (waited for
  :data:`SESSION_WAIT` seconds): the build (``BuildOptions.session``) then syncs its local
  sources from the client and sends ``local``/``tar``/``oci``/``docker`` outputs to it; the
  build is cancelled when that session closes (CANCELLED, as buildkitd).
  Those client-side outputs without a session are refused (they would otherwise be written
  on the daemon's host). No Definition and no Frontend is a forwarded build (buildctl's
  form): the client drives it over LLBBridge (:mod:`bkcore.api.gateway`) and Returns the
  result, which is exported here.
* ``Status``: the build's progress events as ``StatusResponse`` deltas. A Status call may
  come before its Solve (it waits :data:`STATUS_WAIT` seconds for the ref, then
  ``no such job``); every event of the job is kept until the job ends so a late reader gets
  the whole history, and a finished job stays readable for :data:`FINISHED_TTL` seconds.

Bad input never reaches a handler as a crash: each request is read with a size limit
(:data:`MAX_RECV`, RESOURCE_EXHAUSTED past it, before the body is buffered), a body that does
not parse is INVALID_ARGUMENT, and every exception leaves as the status of
:mod:`bkcore.api.errors` (with ``grpc-status-details-bin``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpclib.const
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from bkcore.api import methods
from bkcore.api.errors import to_grpc_error
from bkcore.api.pb import control as cpb
from bkcore.api.pb import wkt
from bkcore.api.pb import worker as wpb
from bkcore.cache.gc import GCPolicy, match_filters, record_fields
from bkcore.controller import Controller
from bkcore.errors import BkError, DefinitionError, ExportError, SessionError

if TYPE_CHECKING:
    import grpclib.server

    from bkcore.api.gateway import Forwarders
    from bkcore.api.history import BuildHistory
    from bkcore.cli.du_cmd import Record
    from bkcore.progress import Event
    from bkcore.session.manager import ConnectedSession

__all__ = [
    "CLIENT_SIDE_EXPORTERS",
    "FINISHED_TTL",
    "MAX_RECV",
    "STATUS_WAIT",
    "WORKER_NAME_LABEL",
    "ControlServicer",
    "DaemonSettings",
    "GCPolicy",
    "check_filters",
    "event_to_status",
    "match_filters",
    "timestamp",
    "usage_record",
]

#: grpc-go's default receive limit, which buildkitd keeps (control.md §1).
MAX_RECV = 4 << 20
#: How long a Status call waits for its Solve (control.md §3 "Status stream").
STATUS_WAIT = 6.0
#: How long the events of a finished job stay readable by a late Status call.
FINISHED_TTL = 10.0
CLIENT_SIDE_EXPORTERS = frozenset({"local", "tar", "oci", "docker"})
#: How long a Solve waits for the client's Control.Session to connect.
SESSION_WAIT = 5.0
VERSION_PACKAGE = "bkcore"
#: Label carrying the worker's registry name (``runc``), which a WorkerRecord has no field for.
WORKER_NAME_LABEL = "org.bkcore.worker.name"


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """What the servicer needs from the daemon config."""

    root: Path
    gc_policy: tuple[GCPolicy, ...] = ()
    allowed_entitlements: frozenset[str] = frozenset()
    max_recv: int = MAX_RECV


# -- conversions -------------------------------------------------------------------------------


def timestamp(value: float) -> wkt.Timestamp:
    """A protobuf Timestamp of a ``time.time()`` float."""
    seconds = int(value // 1)
    nanos = round((value - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return wkt.Timestamp(seconds=seconds, nanos=nanos)


def usage_record(record: Record) -> cpb.UsageRecord:
    """The wire form of one ``bkcore du`` record."""
    created = record.created_at if record.created_at else record.last_used
    out = cpb.UsageRecord(
        id=record.id,
        mutable=record.mutable,
        in_use=record.in_use,
        size=record.size,
        parent=record.parent or "",
        created_at=timestamp(created or 0.0),
        description=record.description,
        record_type=record.type,
        shared=not record.in_use and not record.reclaimable,
        parents=[record.parent] if record.parent else [],
        usage_count=record.usage_count,
    )
    if record.last_used:
        out.last_used_at = timestamp(record.last_used)
    return out


#: A containerd filter field: identifiers (letters, digits, ``_``) joined by ``.``.
_FIELD = r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*"


def check_filters(filters: Sequence[str], what: str = "") -> None:
    """Raise :class:`DefinitionError` for a malformed filter, before any work is done, with
    BuildKit's wording (``failed to parse diskusage filters [A B]: ...``). The syntax is
    containerd's: a field name, then ``==``, ``!=`` or ``~=`` and a value without spaces or
    commas (or a quoted one), or a field name alone; a ``~=`` value must compile."""
    import re

    from bkcore.cache.gc import check_filters as check_values

    where = f"failed to parse {what + ' ' if what else ''}filters [{' '.join(filters)}]"
    pattern = re.compile(rf'\s*({_FIELD})\s*(?:(==|!=|~=)\s*("[^"]*"|[^\s,"]+)\s*)?')
    for item in filters:
        for part in item.split(","):
            if pattern.fullmatch(part) is None:
                raise DefinitionError(
                    f"{where}: {part!r}: expected a field name, then an operator "
                    '("=="|"!="|"~=") and a value'
                )
    try:
        check_values(filters)
    except DefinitionError as exc:
        raise DefinitionError(f"{where}: {exc}") from exc


def event_to_status(events: Sequence[Event]) -> cpb.StatusResponse:
    """One ``StatusResponse`` delta carrying ``events`` in order."""
    from bkcore.progress import LogEvent, StatusEvent, VertexEvent, WarningEvent

    out = cpb.StatusResponse()
    for ev in events:
        if type(ev) is VertexEvent:
            v = cpb.Vertex(digest=ev.digest, inputs=list(ev.inputs), name=ev.name, cached=ev.cached)
            if ev.started is not None:
                v.started = timestamp(ev.started)
            if ev.completed is not None:
                v.completed = timestamp(ev.completed)
            v.error = ev.error
            out.vertexes.append(v)
        elif type(ev) is StatusEvent:
            s = cpb.VertexStatus(
                id=ev.id,
                vertex=ev.vertex,
                name=ev.name,
                current=ev.current,
                total=ev.total,
                timestamp=timestamp(ev.timestamp or time.time()),
            )
            if ev.started is not None:
                s.started = timestamp(ev.started)
            if ev.completed is not None:
                s.completed = timestamp(ev.completed)
            out.statuses.append(s)
        elif type(ev) is LogEvent:
            out.logs.append(
                cpb.VertexLog(
                    vertex=ev.vertex,
                    timestamp=timestamp(ev.timestamp),
                    stream=ev.stream,
                    msg=ev.data,
                )
            )
        elif type(ev) is WarningEvent:
            out.warnings.append(
                cpb.VertexWarning(
                    vertex=ev.vertex,
                    level=ev.level,
                    short=ev.short.encode(),
                    detail=[d.encode() for d in ev.detail],
                    url=ev.url,
                )
            )
    return out


# -- jobs ----------------------------------------------------------------------------------------


@dataclass
class _Job:
    """The progress of one Solve, kept whole for Status readers."""

    ref: str
    events: list[Event] = field(default_factory=list)
    done: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, batch: Sequence[Event]) -> None:
        async with self.changed:
            self.events.extend(batch)
            self.changed.notify_all()

    async def finish(self) -> None:
        async with self.changed:
            self.done = True
            self.changed.notify_all()

    async def follow(self) -> AsyncIterator[list[Event]]:
        """Every batch of events from the first on, until the job ends."""
        sent = 0
        while True:
            async with self.changed:
                while not self.done and len(self.events) <= sent:
                    await self.changed.wait()
                batch = self.events[sent:]
                done = self.done
            sent += len(batch)
            if batch:
                yield batch
            if done and sent >= len(self.events):
                return


# -- the servicer ------------------------------------------------------------------------------

_Handler = Callable[["grpclib.server.Stream[Any, Any]"], Awaitable[None]]


class ControlServicer:
    """``moby.buildkit.v1.Control`` over ``controller`` (a running :class:`Controller`).

    ``session_handler`` (optional) serves ``Control.Session``: it receives the raw grpclib
    stream; without one the method is UNIMPLEMENTED. ``forwarders`` (optional, shared with
    :class:`bkcore.api.gateway.LLBBridgeServicer` on the same server) enables forwarded builds:
    a Solve with neither Definition nor Frontend that the client drives over LLBBridge.
    """

    def __init__(
        self,
        controller: Controller,
        settings: DaemonSettings,
        *,
        session_handler: _Handler | None = None,
        forwarders: Forwarders | None = None,
        history: BuildHistory | None = None,
    ) -> None:
        self.controller = controller
        self.settings = settings
        self.session_handler = session_handler
        self.forwarders = forwarders
        self.history = history
        self._jobs: dict[str, _Job] = {}
        self._job_waiters: dict[str, asyncio.Event] = {}
        self._builds: set[asyncio.Task[Any]] = set()

    # -- plumbing ---------------------------------------------------------------------------

    async def _recv(self, stream: grpclib.server.Stream[Any, Any], message_type: Any) -> Any:
        """Read the one request message with the size limit; map bad bodies to statuses."""
        from bkcore.api.codec import recv_limited

        return await recv_limited(stream, message_type, self.settings.max_recv)

    def _unary(
        self, request_type: Any, call: Callable[[Any], Awaitable[Any]]
    ) -> Callable[[grpclib.server.Stream[Any, Any]], Awaitable[None]]:
        async def handler(stream: grpclib.server.Stream[Any, Any]) -> None:
            request = await self._recv(stream, request_type)
            try:
                response = await call(request)
            except GRPCError:
                raise
            except Exception as exc:
                raise to_grpc_error(exc) from exc
            await stream.send_message(response)

        return handler

    def _server_stream(
        self, request_type: Any, call: Callable[[Any, Any], AsyncIterator[Any]]
    ) -> Callable[[grpclib.server.Stream[Any, Any]], Awaitable[None]]:
        async def handler(stream: grpclib.server.Stream[Any, Any]) -> None:
            request = await self._recv(stream, request_type)
            try:
                async for response in call(request, stream):
                    await stream.send_message(response)
            except GRPCError:
                raise
            except Exception as exc:
                raise to_grpc_error(exc) from exc

        return handler

    async def _session(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        if self.session_handler is None:
            raise GRPCError(Status.UNIMPLEMENTED, "client sessions are not served by this daemon")
        await self.session_handler(stream)

    async def _unimplemented(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "build history is not kept by this daemon")

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        card = grpclib.const.Cardinality
        H = grpclib.const.Handler
        return {
            methods.CONTROL_DISK_USAGE: H(
                self._unary(cpb.DiskUsageRequest, self.disk_usage),
                card.UNARY_UNARY,
                cpb.DiskUsageRequest,
                cpb.DiskUsageResponse,
            ),
            methods.CONTROL_PRUNE: H(
                self._server_stream(cpb.PruneRequest, self.prune),
                card.UNARY_STREAM,
                cpb.PruneRequest,
                cpb.UsageRecord,
            ),
            methods.CONTROL_SOLVE: H(
                self._unary(cpb.SolveRequest, self.solve),
                card.UNARY_UNARY,
                cpb.SolveRequest,
                cpb.SolveResponse,
            ),
            methods.CONTROL_STATUS: H(
                self._server_stream(cpb.StatusRequest, self.status),
                card.UNARY_STREAM,
                cpb.StatusRequest,
                cpb.StatusResponse,
            ),
            methods.CONTROL_SESSION: H(
                self._session, card.STREAM_STREAM, cpb.BytesMessage, cpb.BytesMessage
            ),
            methods.CONTROL_LIST_WORKERS: H(
                self._unary(cpb.ListWorkersRequest, self.list_workers),
                card.UNARY_UNARY,
                cpb.ListWorkersRequest,
                cpb.ListWorkersResponse,
            ),
            methods.CONTROL_INFO: H(
                self._unary(cpb.InfoRequest, self.info),
                card.UNARY_UNARY,
                cpb.InfoRequest,
                cpb.InfoResponse,
            ),
            methods.CONTROL_LISTEN_BUILD_HISTORY: H(
                self._server_stream(cpb.BuildHistoryRequest, self.listen_build_history)
                if self.history is not None
                else self._unimplemented,
                card.UNARY_STREAM,
                cpb.BuildHistoryRequest,
                cpb.BuildHistoryEvent,
            ),
            methods.CONTROL_UPDATE_BUILD_HISTORY: H(
                self._unary(cpb.UpdateBuildHistoryRequest, self.update_build_history)
                if self.history is not None
                else self._unimplemented,
                card.UNARY_UNARY,
                cpb.UpdateBuildHistoryRequest,
                cpb.UpdateBuildHistoryResponse,
            ),
        }

    # -- build history (bkcore.api.history) -------------------------------------------------

    def listen_build_history(
        self, request: cpb.BuildHistoryRequest, stream: Any
    ) -> AsyncIterator[cpb.BuildHistoryEvent]:
        assert self.history is not None
        return self.history.listen(request)

    async def update_build_history(
        self, request: cpb.UpdateBuildHistoryRequest
    ) -> cpb.UpdateBuildHistoryResponse:
        assert self.history is not None
        return self.history.update(request)

    # -- workers and info -----------------------------------------------------------------------

    @staticmethod
    def version() -> wpb.BuildkitVersion:
        import bkcore

        return wpb.BuildkitVersion(package=VERSION_PACKAGE, version=bkcore.__version__)

    async def info(self, request: cpb.InfoRequest) -> cpb.InfoResponse:
        return cpb.InfoResponse(buildkit_version=self.version())

    async def list_workers(self, request: cpb.ListWorkersRequest) -> cpb.ListWorkersResponse:
        from bkcore.llb import pb

        check_filters(request.filter)
        info = self.controller.engine.worker.info()
        fields = {"id": info.id, **{f"labels.{k}": v for k, v in info.labels.items()}}
        if not match_filters(request.filter, fields):
            return cpb.ListWorkersResponse()
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
        labels = dict(sorted(info.labels.items()))
        labels[WORKER_NAME_LABEL] = self.controller.engine.worker.name
        record = wpb.WorkerRecord(
            id=info.id,
            labels=labels,
            platforms=platforms,
            gc_policy=[
                wpb.GcPolicy(
                    all=p.all,
                    keep_duration=int(p.keep_duration * 1e9),
                    keep_bytes=p.keep_bytes,
                    filters=list(p.filters),
                )
                for p in self.settings.gc_policy
            ],
            buildkit_version=self.version(),
        )
        return cpb.ListWorkersResponse(record=[record])

    # -- disk usage and prune ---------------------------------------------------------------

    def _collect(self, filters: Sequence[str]) -> list[Record]:
        from bkcore.cli.du_cmd import collect, open_store

        store = open_store(self.settings.root)
        if store is None:
            return []
        try:
            records = collect(store)
        finally:
            store.close()
        return [r for r in records if match_filters(filters, record_fields(r))]

    async def disk_usage(self, request: cpb.DiskUsageRequest) -> cpb.DiskUsageResponse:
        check_filters(request.filter, "diskusage")
        records = await asyncio.to_thread(self._collect, list(request.filter))
        return cpb.DiskUsageResponse(record=[usage_record(r) for r in records])

    def _prune(self, request: cpb.PruneRequest) -> list[Record]:
        from bkcore.cli.du_cmd import collect, open_store
        from bkcore.cli.prune_cmd import prune

        store = open_store(self.settings.root)
        if store is None:
            return []
        try:
            others = {
                r.id for r in collect(store) if not match_filters(request.filter, record_fields(r))
            }
            report = prune(
                store,
                keep_duration=max(0, request.keep_duration) / 1e9,
                keep_bytes=max(0, request.keep_bytes),
                protect=others,
            )
        finally:
            store.close()
        return report.removed

    async def prune(self, request: cpb.PruneRequest, stream: Any) -> AsyncIterator[cpb.UsageRecord]:
        check_filters(request.filter, "prune")
        removed = await asyncio.to_thread(self._prune, request)
        for record in removed:
            yield usage_record(record)

    # -- solve and status -------------------------------------------------------------------

    def _options(self, request: cpb.SolveRequest) -> Any:
        from bkcore.controller import BuildOptions, OutputSpec

        where = f"Solve {request.ref}" if request.ref else "Solve"
        has_definition = bool(request.definition.def_)
        if request.frontend and has_definition:
            raise DefinitionError(f"{where}: Frontend and Definition are mutually exclusive")
        if not request.frontend and not has_definition and self.forwarders is None:
            raise GRPCError(
                Status.UNIMPLEMENTED,
                f"{where}: a build without Definition or Frontend (gateway forwarder) "
                "needs the LLBBridge service, which this daemon does not serve",
            )
        outputs: list[OutputSpec] = []
        if request.exporter:
            attrs = dict(request.exporter_attrs)
            if request.exporter in CLIENT_SIDE_EXPORTERS:
                if not request.session:
                    raise ExportError(
                        f"{where}: exporter {request.exporter!r} writes on the client side "
                        "and needs the client's session (SolveRequest.Session)"
                    )
                # The client strips dest (control.md §3) and FileSend writes where it chose;
                # the controller's check of the output still wants one.
                attrs.setdefault("dest", "client")
            epoch = request.frontend_attrs.get("build-arg:SOURCE_DATE_EPOCH")
            if epoch is not None:  # as BuildKit's controller does (control.md §3)
                attrs.setdefault("source-date-epoch", epoch)
            outputs.append(OutputSpec(request.exporter, attrs))
        cache = request.cache
        for what, kinds, deprecated in (
            ("export", [e.type for e in cache.exports], cache.export_ref_deprecated),
            ("import", [e.type for e in cache.imports], cache.import_refs_deprecated),
        ):
            if kinds or deprecated:
                named = ", ".join(f"type={k}" for k in kinds) or "registry ref"
                # one line; buildctl prints "failed to solve: Unimplemented: <this>"
                raise GRPCError(
                    Status.UNIMPLEMENTED,
                    f"cache {what} ({named}) is not supported by bkcore daemon; "
                    f"build without --{what}-cache",
                )
        wanted = frozenset(request.entitlements)
        refused = sorted(wanted - self.settings.allowed_entitlements)
        if refused:
            # buildkitd's words exactly (buildctl users grep for them)
            raise BkError(
                f"granting entitlement {refused[0]} is not allowed by build daemon configuration"
            )
        frontend_opts = dict(request.frontend_attrs)
        definition = b""
        if has_definition:
            definition = bytes(request.definition)
        return BuildOptions(
            definition=definition,
            source=where,
            session=request.session,
            outputs=tuple(outputs),
            no_cache="no-cache" in frontend_opts and not request.frontend,
            entitlements=wanted,
            frontend=request.frontend,
            frontend_opts=frontend_opts,
            frontend_inputs=dict(request.frontend_inputs),
        )

    async def solve(self, request: cpb.SolveRequest) -> cpb.SolveResponse:
        from bkcore.controller import decode
        from bkcore.progress import ProgressStream

        options = self._options(request)
        definition = decode(options) if options.definition else None
        forwarded = not options.definition and not options.frontend
        conn = None
        if request.session:
            conn = await self.controller.engine.sessions.get(request.session, SESSION_WAIT)
        ref = request.ref
        if ref and ref in self._jobs and not self._jobs[ref].done:
            raise GRPCError(Status.ALREADY_EXISTS, f"job ID {ref} exists")
        job = _Job(ref)
        if ref:
            self._jobs[ref] = job
            self._job_waiters.pop(ref, asyncio.Event()).set()
        stream = ProgressStream()
        reader = stream.subscribe()

        async def pump() -> None:
            while batch := await reader.next_batch():
                await job.add(batch)

        task = asyncio.current_task()
        if task is not None:
            self._builds.add(task)
        if self.history is not None:
            self.history.start_solve(request)
        failure: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pump())
                try:
                    if forwarded:
                        from bkcore.api.gateway import forwarded_build

                        assert self.forwarders is not None
                        build: Awaitable[Any] = forwarded_build(
                            self.controller, options, ref, self.forwarders, progress=stream
                        )
                    else:
                        build = self.controller.build(
                            options, progress=stream, definition=definition
                        )
                    response = await _until_session_closes(build, conn, options.source)
                finally:
                    stream.close()
        except BaseExceptionGroup as group:
            failure = group.exceptions[0]
            # not "from None": that would drop the failed step's error (exit code, vertex)
            raise failure from failure.__cause__
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if self.history is not None:
                done = failure is None
                self.history.finish_solve(
                    ref,
                    dict(response.exporter_response) if done else None,
                    error=failure,
                    events=job.events,
                )
            if task is not None:
                self._builds.discard(task)
            await job.finish()
            if ref:
                asyncio.get_running_loop().call_later(FINISHED_TTL, self._forget, ref, job)
        return cpb.SolveResponse(exporter_response=dict(response.exporter_response))

    def _forget(self, ref: str, job: _Job) -> None:
        if self._jobs.get(ref) is job:
            del self._jobs[ref]

    async def _wait_job(self, ref: str) -> _Job:
        job = self._jobs.get(ref)
        if job is not None:
            return job
        waiter = self._job_waiters.setdefault(ref, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), STATUS_WAIT)
        job = self._jobs.get(ref)
        if job is None:
            if self._job_waiters.get(ref) is waiter:
                del self._job_waiters[ref]
            raise GRPCError(Status.NOT_FOUND, f"no such job {ref}")
        return job

    async def status(
        self, request: cpb.StatusRequest, stream: Any
    ) -> AsyncIterator[cpb.StatusResponse]:
        if not request.ref:
            raise GRPCError(Status.INVALID_ARGUMENT, "Status needs the Ref of a Solve")
        job = await self._wait_job(request.ref)
        first = True
        async for batch in job.follow():
            if first:
                first = False
                await stream.send_initial_metadata(
                    metadata={methods.CURRENT_TIMESTAMP: _rfc3339(time.time())}
                )
            yield event_to_status(batch)

    async def cancel_builds(self) -> None:
        """Cancel every running Solve and wait for them to unwind (SIGTERM)."""
        tasks = list(self._builds)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _settle(task: asyncio.Future[Any]) -> bool:
    """Wait for ``task`` to finish even if the caller is cancelled meanwhile (the build's
    clean-up must not be interrupted by a second cancellation); True if it was."""
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            interrupted = True
    return interrupted


async def _until_session_closes(
    build: Awaitable[Any], conn: ConnectedSession | None, where: str
) -> Any:
    """Run the build; if the client's session goes away first, cancel it (only this build:
    vertices shared with other jobs go on for them) and fail naming the session. The build
    task is cancelled once, whatever cancels the Solve (session end, lost connection)."""
    if conn is None:
        return await build
    task = asyncio.ensure_future(build)
    closed = asyncio.ensure_future(conn.closed.wait())
    try:
        try:
            await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            await _settle(task)
            if not task.cancelled():
                task.exception()  # retrieved: the Solve ends cancelled either way
            raise
        if not task.done():
            task.cancel()
            if await _settle(task):
                raise asyncio.CancelledError
            if task.cancelled():
                closed_error = SessionError(
                    f"{where}: the client's session {conn.id} closed; build cancelled"
                )
                # as buildkitd, whose build context is cancelled with the session
                closed_error.grpc_status = Status.CANCELLED  # type: ignore[attr-defined]
                raise closed_error
        return task.result()
    finally:
        closed.cancel()


def _rfc3339(value: float) -> str:
    seconds = int(value)
    nanos = int((value - seconds) * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"
