"""Progress as data: frozen events keyed by vertex digest on bounded multi-reader streams.

Writers never block: :meth:`ProgressStream.write` only appends to each reader's buffer. A
reader that lags is kept bounded by coalescing: only the latest :class:`VertexEvent` per
digest and the latest :class:`StatusEvent` per id are kept, and the oldest log chunks are
dropped past a byte budget (counted in :attr:`ProgressReader.dropped_log_bytes`).

:class:`SharedProgress` is the progress of one vertex that several jobs may share: it fans
every event out to each job's stream and keeps a coalesced history, replayed to a job that
joins late (spec/solver.md §6, §7).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

__all__ = [
    "Event",
    "LogEvent",
    "ProgressReader",
    "ProgressStream",
    "SharedProgress",
    "StatusEvent",
    "VertexEvent",
    "WarningEvent",
]


@dataclass(frozen=True, slots=True)
class VertexEvent:
    """Full snapshot of a vertex (never a delta). Timestamps are ``time.time()`` floats."""

    digest: str
    name: str
    inputs: tuple[str, ...] = ()
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A sub-task of a vertex (``resolve ...``, ``extracting ...``) with a byte/item count."""

    id: str
    vertex: str
    name: str = ""
    current: int = 0
    total: int = 0
    timestamp: float = 0.0
    started: float | None = None
    completed: float | None = None


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A raw chunk of a vertex's process output; stream 1 is stdout, 2 is stderr."""

    vertex: str
    stream: int
    data: bytes
    timestamp: float


@dataclass(frozen=True, slots=True)
class WarningEvent:
    """A warning attached to a vertex."""

    vertex: str
    level: int
    short: str
    detail: tuple[str, ...] = ()
    url: str = ""
    timestamp: float = 0.0


Event = VertexEvent | StatusEvent | LogEvent | WarningEvent


class _Keep:
    """Marker: leave this field of the vertex snapshot unchanged."""


_KEEP = _Keep()


def _coalesce_key(event: Event) -> tuple[str, str] | None:
    if type(event) is VertexEvent:
        return ("v", event.digest)
    if type(event) is StatusEvent:
        return ("s", event.vertex + "\0" + event.id)
    return None


def _compact(events: list[Event], max_log_bytes: int) -> tuple[list[Event], int]:
    """Keep the latest vertex/status state per key and at most ``max_log_bytes`` of logs.

    Returns the compacted list (in write order) and the number of log bytes dropped.
    """
    seen: set[tuple[str, str]] = set()
    kept: list[Event] = []
    log_bytes = 0
    dropped = 0
    for event in reversed(events):
        key = _coalesce_key(event)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        elif type(event) is LogEvent:
            size = len(event.data)
            if log_bytes + size > max_log_bytes:
                dropped += size
                continue
            log_bytes += size
        kept.append(event)
    kept.reverse()
    return kept, dropped


class ProgressReader:
    """One reader of a :class:`ProgressStream`; gets every event written after it subscribed."""

    def __init__(self, stream: ProgressStream) -> None:
        self._stream = stream
        self._buf: list[Event] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self._limit = stream.max_buffered
        self._log_bytes = 0
        self.dropped_log_bytes = 0

    def _push(self, event: Event) -> None:
        buf = self._buf
        buf.append(event)
        stream = self._stream
        if type(event) is LogEvent:
            self._log_bytes += len(event.data)
        if len(buf) > self._limit or self._log_bytes > stream.max_log_bytes:
            # Keep half the log budget so that dropping stays amortised O(1) per event.
            self._buf, dropped = _compact(buf, stream.max_log_bytes // 2)
            self.dropped_log_bytes += dropped
            self._log_bytes -= dropped
            # Distinct keys cannot be coalesced: grow geometrically to keep pushes O(1).
            self._limit = max(stream.max_buffered, 2 * len(self._buf))
        self._wakeup.set()

    def _close(self) -> None:
        self._closed = True
        self._wakeup.set()

    def read_nowait(self) -> list[Event]:
        """Every buffered event, oldest first (possibly empty)."""
        batch, self._buf = self._buf, []
        self._limit = self._stream.max_buffered
        self._log_bytes = 0
        self._wakeup.clear()
        return batch

    async def next_batch(self) -> list[Event]:
        """Wait for events; return them oldest first, or ``[]`` once the stream is closed."""
        while not self._buf:
            if self._closed:
                return []
            await self._wakeup.wait()
            self._wakeup.clear()
        return self.read_nowait()

    def unsubscribe(self) -> None:
        """Stop receiving events."""
        self._stream._readers.discard(self)
        self._close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            batch = await self.next_batch()
            if not batch:
                return
            for event in batch:
                yield event


class ProgressStream:
    """One writer, many async readers; writes never block and memory stays bounded."""

    def __init__(self, *, max_buffered: int = 10_000, max_log_bytes: int = 4 << 20) -> None:
        self.max_buffered = max_buffered
        self.max_log_bytes = max_log_bytes
        self._readers: set[ProgressReader] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(self) -> ProgressReader:
        """A new reader that gets every event written from now on."""
        reader = ProgressReader(self)
        if self._closed:
            reader._close()
        else:
            self._readers.add(reader)
        return reader

    def write(self, event: Event) -> None:
        """Deliver ``event`` to every reader (ignored once closed)."""
        if self._closed:
            return
        for reader in self._readers:
            reader._push(event)

    def write_many(self, events: Sequence[Event]) -> None:
        for event in events:
            self.write(event)

    def close(self) -> None:
        """End the stream: readers drain what they have, then see the end."""
        self._closed = True
        for reader in self._readers:
            reader._close()
        self._readers.clear()


class SharedProgress:
    """Progress of one vertex, fanned out to every job that shares it, with replay history.

    The history is coalesced like a lagging reader (latest vertex snapshot, latest state of
    each status id, logs up to ``max_log_bytes``), so a late joiner sees the current state and
    the recent output without the history growing without bound.
    """

    def __init__(self, vertex: VertexEvent, *, max_log_bytes: int = 1 << 20) -> None:
        self._state = vertex
        self._targets: list[ProgressStream] = []
        self._history: list[Event] = []
        self._max_log_bytes = max_log_bytes
        self._compact_at = 256

    @property
    def digest(self) -> str:
        return self._state.digest

    @property
    def state(self) -> VertexEvent:
        """The latest vertex snapshot written."""
        return self._state

    def history(self) -> list[Event]:
        """The coalesced events a late joiner is replayed, oldest first."""
        self._history, _ = _compact(self._history, self._max_log_bytes)
        return list(self._history)

    def add(self, stream: ProgressStream) -> None:
        """Replay the history into ``stream``, then send it every new event."""
        if stream in self._targets:
            return
        stream.write_many(self.history())
        self._targets.append(stream)

    def remove(self, stream: ProgressStream) -> None:
        if stream in self._targets:
            self._targets.remove(stream)

    def write(self, event: Event) -> None:
        history = self._history
        history.append(event)
        if len(history) > self._compact_at:
            self._history, _ = _compact(history, self._max_log_bytes)
            self._compact_at = max(256, 2 * len(self._history))
        for target in self._targets:
            target.write(event)

    # Helpers for the solver and for ops (the vertex digest is filled in).

    def vertex(
        self,
        *,
        started: float | _Keep | None = _KEEP,
        completed: float | _Keep | None = _KEEP,
        cached: bool | _Keep = _KEEP,
        error: str | _Keep = _KEEP,
    ) -> VertexEvent:
        """Write a new snapshot of the vertex with the given fields changed and return it."""
        old = self._state
        self._state = state = VertexEvent(
            old.digest,
            old.name,
            old.inputs,
            old.started if isinstance(started, _Keep) else started,
            old.completed if isinstance(completed, _Keep) else completed,
            old.cached if isinstance(cached, _Keep) else cached,
            old.error if isinstance(error, _Keep) else error,
        )
        self.write(state)
        return state

    def log(self, stream: int, data: bytes) -> None:
        """Write a chunk of process output (1 = stdout, 2 = stderr)."""
        self.write(LogEvent(self._state.digest, stream, data, time.time()))

    def status(
        self,
        id: str,
        *,
        name: str = "",
        current: int = 0,
        total: int = 0,
        started: float | None = None,
        completed: float | None = None,
    ) -> StatusEvent:
        """Write the latest state of sub-task ``id`` (``name`` defaults to ``id``)."""
        event = StatusEvent(
            id=id,
            vertex=self._state.digest,
            name=name or id,
            current=current,
            total=total,
            timestamp=time.time(),
            started=started,
            completed=completed,
        )
        self.write(event)
        return event

    def warning(
        self, short: str, *, level: int = 1, detail: Sequence[str] = (), url: str = ""
    ) -> None:
        self.write(WarningEvent(self._state.digest, level, short, tuple(detail), url, time.time()))
