"""Build history (control.md "Build history"): one record per build, kept under the state root.

:class:`BuildHistory` records each build when it starts (:meth:`~BuildHistory.start`) and when
it ends (:meth:`~BuildHistory.finish`: exporter response or error, completion time), and
serves the two Control methods: :meth:`~BuildHistory.listen` (``ListenBuildHistory``: the
records there are, then live events until the client goes; ``EarlyExit`` stops after the
records there are; ``ActiveOnly`` only running builds; ``Ref`` one build) and
:meth:`~BuildHistory.update` (``UpdateBuildHistory``: pin, unpin, delete).

Completed records persist as one JSON file each in ``<root>/history/`` (named by a hash of the
ref, so a ref never names a path; written to a temp file and renamed); a daemon restarted on
the same root lists them again. As buildkitd's ``[history]`` defaults: at most
:data:`MAX_ENTRIES` completed records and none older than :data:`MAX_AGE` seconds are kept,
oldest first out, pinned records excepted. Running builds live in memory only (a build never
outlives its daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bkcore.api.pb import control as cpb

__all__ = ["MAX_AGE", "MAX_ENTRIES", "BuildHistory", "HistoryRecord"]

MAX_ENTRIES = 50
MAX_AGE = 48 * 3600.0
STARTED, COMPLETE, DELETED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """What the history keeps of one build (the fields of ``BuildHistoryRecord`` bkcore fills)."""

    ref: str
    frontend: str = ""
    frontend_attrs: Mapping[str, str] = field(default_factory=dict)
    exporters: Sequence[tuple[str, Mapping[str, str]]] = ()
    created_at: float = 0.0
    completed_at: float | None = None
    exporter_response: Mapping[str, str] = field(default_factory=dict)
    error_code: int = 0  # gRPC status code of the failure (0: succeeded or running)
    error_message: str = ""
    pinned: bool = False
    generation: int = 0
    #: Steps (vertices) of the build: all, completed, and completed from the cache.
    total_steps: int = 0
    completed_steps: int = 0
    cached_steps: int = 0

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["exporters"] = [[t, dict(a)] for t, a in self.exporters]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> HistoryRecord:
        return cls(
            ref=str(doc["ref"]),
            frontend=str(doc.get("frontend", "")),
            frontend_attrs=dict(doc.get("frontend_attrs", {})),
            exporters=tuple((str(t), dict(a)) for t, a in doc.get("exporters", [])),
            created_at=float(doc.get("created_at", 0.0)),
            completed_at=None if doc.get("completed_at") is None else float(doc["completed_at"]),
            exporter_response=dict(doc.get("exporter_response", {})),
            error_code=int(doc.get("error_code", 0)),
            error_message=str(doc.get("error_message", "")),
            pinned=bool(doc.get("pinned", False)),
            generation=int(doc.get("generation", 0)),
            total_steps=int(doc.get("total_steps", 0)),
            completed_steps=int(doc.get("completed_steps", 0)),
            cached_steps=int(doc.get("cached_steps", 0)),
        )

    def to_proto(self) -> cpb.BuildHistoryRecord:
        from bkcore.api.pb import control as cpb
        from bkcore.api.server import timestamp

        out = cpb.BuildHistoryRecord(
            ref=self.ref,
            frontend=self.frontend,
            frontend_attrs=dict(self.frontend_attrs),
            exporters=[cpb.Exporter(type=t, attrs=dict(a)) for t, a in self.exporters],
            created_at=timestamp(self.created_at),
            exporter_response=dict(self.exporter_response),
            generation=self.generation,
            pinned=self.pinned,
            num_total_steps=self.total_steps,
            num_completed_steps=self.completed_steps,
            num_cached_steps=self.cached_steps,
        )
        if self.completed_at is not None:
            out.completed_at = timestamp(self.completed_at)
        if self.error_code:
            from bkcore.api.pb import status as rpc

            out.error = rpc.Status(code=self.error_code, message=self.error_message)
        return out


def _steps(events: Sequence[object]) -> tuple[int, int, int]:
    """(all, completed, cached) vertices of a build's progress events (the last event of a
    vertex tells its state)."""
    from bkcore.progress import VertexEvent

    last: dict[str, VertexEvent] = {}
    for ev in events:
        if type(ev) is VertexEvent:
            last[ev.digest] = ev
    done = [v for v in last.values() if v.completed is not None and not v.error]
    return len(last), len(done), sum(1 for v in done if v.cached)


def _file_name(ref: str) -> str:
    return hashlib.sha256(ref.encode()).hexdigest() + ".json"


class BuildHistory:
    """The build history of one daemon, persisted under ``root/history``."""

    def __init__(
        self, root: Path, *, max_entries: int = MAX_ENTRIES, max_age: float = MAX_AGE
    ) -> None:
        self.dir = root / "history"
        self.max_entries = max_entries
        self.max_age = max_age
        self._done: dict[str, HistoryRecord] = {}
        self._active: dict[str, HistoryRecord] = {}
        self._listeners: set[asyncio.Queue[tuple[int, HistoryRecord]]] = set()
        self._load()

    # -- persistence ----------------------------------------------------------------------

    def _load(self) -> None:
        """Read the completed records; a file left half-written by a crash (a temp file,
        or one that does not parse) is removed."""
        if not self.dir.is_dir():
            return
        for path in self.dir.iterdir():
            try:
                if path.suffix != ".json":
                    raise ValueError("not a record")
                record = HistoryRecord.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            self._done[record.ref] = record

    def _write(self, record: HistoryRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(record.to_json(), out)
            os.replace(tmp, self.dir / _file_name(record.ref))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _remove(self, ref: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / _file_name(ref)).unlink()

    # -- recording ------------------------------------------------------------------------

    def _emit(self, kind: int, record: HistoryRecord) -> None:
        for queue in self._listeners:
            queue.put_nowait((kind, record))

    def start(
        self,
        ref: str,
        *,
        frontend: str = "",
        frontend_attrs: Mapping[str, str] | None = None,
        exporters: Sequence[tuple[str, Mapping[str, str]]] = (),
        now: float | None = None,
    ) -> None:
        """A build ``ref`` started (a second build with a completed ref replaces its record)."""
        record = HistoryRecord(
            ref=ref,
            frontend=frontend,
            frontend_attrs=dict(frontend_attrs or {}),
            exporters=tuple((t, dict(a)) for t, a in exporters),
            created_at=time.time() if now is None else now,
        )
        self._active[ref] = record
        self._emit(STARTED, record)

    def finish(
        self,
        ref: str,
        *,
        exporter_response: Mapping[str, str] | None = None,
        error_code: int = 0,
        error_message: str = "",
        events: Sequence[object] = (),
        now: float | None = None,
    ) -> None:
        """The build ``ref`` ended: with the exporters' response, or with an error.
        ``events``: the build's progress events, which give its step counts."""
        started = self._active.pop(ref, None)
        if started is None:
            return
        total, completed, cached = _steps(events)
        record = replace(
            started,
            completed_at=time.time() if now is None else now,
            exporter_response=dict(exporter_response or {}),
            error_code=error_code,
            error_message=error_message,
            total_steps=total,
            completed_steps=completed,
            cached_steps=cached,
        )
        self._done[ref] = record
        self._write(record)
        self._emit(COMPLETE, record)
        self._trim(record.completed_at or 0.0)

    def start_solve(self, request: cpb.SolveRequest) -> None:
        """Record a ``Control.Solve`` starting (not one marked ``Internal`` or without Ref)."""
        if request.internal or not request.ref:
            return
        exporters = [(request.exporter, dict(request.exporter_attrs))] if request.exporter else []
        self.start(
            request.ref,
            frontend=request.frontend,
            frontend_attrs=dict(request.frontend_attrs),
            exporters=exporters,
        )

    def finish_solve(
        self,
        ref: str,
        exporter_response: Mapping[str, str] | None = None,
        error: BaseException | None = None,
        events: Sequence[object] = (),
    ) -> None:
        """Record the end of the Solve ``ref``: its response, or its error as the gRPC
        status a client saw (a cancelled build: CANCELLED); ``events``: its progress."""
        if error is None:
            self.finish(ref, exporter_response=exporter_response, events=events)
            return
        from grpclib.const import Status

        from bkcore.api.errors import to_grpc_error

        if isinstance(error, asyncio.CancelledError):
            code, message = Status.CANCELLED.value, "context canceled"
        else:
            grpc = to_grpc_error(error)
            code, message = grpc.status.value, grpc.message or ""
        self.finish(ref, error_code=code, error_message=message, events=events)

    def _trim(self, now: float) -> None:
        old = [
            r
            for r in self._done.values()
            if not r.pinned and r.completed_at is not None and r.completed_at < now - self.max_age
        ]
        keep = sorted(
            (r for r in self._done.values() if not r.pinned and r not in old),
            key=lambda r: (r.completed_at or 0.0, r.ref),
        )
        unpinned_limit = max(0, self.max_entries - sum(1 for r in self._done.values() if r.pinned))
        old.extend(keep[: max(0, len(keep) - unpinned_limit)])
        for record in old:
            self._delete(record)

    def _delete(self, record: HistoryRecord) -> None:
        self._done.pop(record.ref, None)
        self._remove(record.ref)
        self._emit(DELETED, record)

    # -- the Control methods --------------------------------------------------------------

    def records(self, *, ref: str = "", active_only: bool = False) -> list[HistoryRecord]:
        """Running builds, then (unless ``active_only``) completed ones, oldest first."""
        out = sorted(self._active.values(), key=lambda r: (r.created_at, r.ref))
        if not active_only:
            out += sorted(self._done.values(), key=lambda r: (r.created_at, r.ref))
        return [r for r in out if not ref or r.ref == ref]

    async def listen(
        self, request: cpb.BuildHistoryRequest
    ) -> AsyncIterator[cpb.BuildHistoryEvent]:
        """``ListenBuildHistory``: the matching records there are, then (unless
        ``EarlyExit``) each change as it happens, until the caller stops iterating."""
        from bkcore.api.pb import control as cpb

        def event(kind: int, record: HistoryRecord) -> cpb.BuildHistoryEvent:
            return cpb.BuildHistoryEvent(
                type=cpb.BuildHistoryEventType(kind), record=record.to_proto()
            )

        queue: asyncio.Queue[tuple[int, HistoryRecord]] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            for record in self.records(ref=request.ref, active_only=request.active_only):
                yield event(STARTED if record.completed_at is None else COMPLETE, record)
            if request.early_exit:
                return
            while True:
                kind, record = await queue.get()
                if request.ref and record.ref != request.ref:
                    continue
                if request.active_only and kind != STARTED:
                    continue
                yield event(kind, record)
        finally:
            self._listeners.discard(queue)

    def update(self, request: cpb.UpdateBuildHistoryRequest) -> cpb.UpdateBuildHistoryResponse:
        """``UpdateBuildHistory``: delete, or set ``pinned``, on the completed build ``Ref``."""
        from grpclib.const import Status
        from grpclib.exceptions import GRPCError

        from bkcore.api.pb import control as cpb

        record = self._done.get(request.ref)
        if record is None:
            raise GRPCError(Status.NOT_FOUND, f"build history: no completed build {request.ref!r}")
        if request.delete:
            self._delete(record)
        elif record.pinned != request.pinned:
            record = replace(record, pinned=request.pinned)
            self._done[record.ref] = record
            self._write(record)
            self._emit(COMPLETE, record)
        return cpb.UpdateBuildHistoryResponse()
