"""``--progress plain``: BuildKit-style ``#N`` lines, one block per vertex, for logs and CI.

Each vertex gets a number when it first shows activity (vertices announced without timestamps
are not printed until they start). Lines look like::

    #3 [2/3] RUN make
    #3 0.512 compiling...
    #3 transferring context: 1.05kB done
    #3 DONE 1.2s

followed by ``CACHED``, ``ERROR: <message>`` or ``CANCELED`` as the vertex ends. A blank line
separates blocks of different vertices. At the end each failed vertex is shown again with its
last log lines between ``------`` rules.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from bkcore.plugins.progress.common import (
    BaseRenderer,
    Clock,
    LineSplitter,
    format_duration,
    format_size,
    is_canceled,
)
from bkcore.progress import LogEvent, StatusEvent, VertexEvent, WarningEvent

if TYPE_CHECKING:
    from bkcore.progress import Event

__all__ = ["PlainRenderer"]

ERROR_TAIL_LINES = 10
STATUS_INTERVAL = 1.0
"""Seconds between two in-progress lines of the same status (its completion always prints)."""


@dataclass(slots=True)
class _Vertex:
    digest: str
    name: str
    number: int = 0
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    error: str = ""
    open: bool = False  # its header is printed and its end line is not
    done_for: float | None = -1.0  # the ``completed`` value its end line was printed for
    splitters: dict[int, LineSplitter] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)
    status_printed: dict[str, tuple[float, int, bool]] = field(default_factory=dict)


class PlainRenderer(BaseRenderer):
    """Writes plain ``#N`` progress lines to ``out``."""

    def __init__(self, out: TextIO, *, clock: Clock = time.time) -> None:
        super().__init__(out, clock=clock)
        self._vertices: dict[str, _Vertex] = {}
        self._next_number = 1
        self._last: _Vertex | None = None
        self._failed: list[_Vertex] = []
        # A vertex whose DONE line waits for the next output: a source is keyed (started,
        # completed) and then run (started again) -- shown as one block when nothing else
        # happened in between.
        self._deferred: _Vertex | None = None

    # -- events ---------------------------------------------------------------------------

    def feed(self, events: Sequence[Event]) -> None:
        # A vertex that completes and starts again within one batch (a source keyed, then
        # run) stays one block: only its last snapshot in the batch may end it.
        last = {e.digest: i for i, e in enumerate(events) if type(e) is VertexEvent}
        for i, event in enumerate(events):
            if type(event) is VertexEvent:
                v = self._on_vertex(event)
                if v is not None and last[v.digest] == i and v.completed is not None:
                    if v.error or v.cached:
                        self._end(v)
                    elif self._deferred is not v:
                        self._flush_deferred()
                        self._deferred = v
            elif type(event) is LogEvent:
                self._on_log(event)
            elif type(event) is StatusEvent:
                self._on_status(event)
            elif type(event) is WarningEvent:
                self._on_warning(event)
        self.out.flush()

    def _vertex(self, digest: str) -> _Vertex:
        v = self._vertices.get(digest)
        if v is None:
            v = self._vertices[digest] = _Vertex(digest, digest)
        return v

    def _on_vertex(self, event: VertexEvent) -> _Vertex | None:
        v = self._vertex(event.digest)
        v.name = event.name or v.name
        if event.started is None and event.completed is None:
            return None  # announced only (§7.1): nothing to show yet
        if not v.open and event.completed is not None and event.completed == v.done_for:
            return None  # the same completion again (a replay)
        if v.open and v.started is not None and (event.started or 0.0) < v.started:
            return None  # an older snapshot than the run being shown
        v.started, v.completed = event.started, event.completed
        v.cached, v.error = event.cached, event.error
        if not v.open:
            self._header(v)
        return v

    def _flush_deferred(self) -> None:
        v, self._deferred = self._deferred, None
        if v is not None and v.open and v.completed is not None:
            self._end(v)

    def _header(self, v: _Vertex) -> None:
        if not v.number:
            v.number = self._next_number
            self._next_number += 1
        v.open = True
        self._line(v, v.name)

    def _end(self, v: _Vertex) -> None:
        if self._deferred is v:
            self._deferred = None
        v.open = False
        v.done_for = v.completed
        self._flush_logs(v)
        if is_canceled(v.error):
            self._line(v, "CANCELED")
        elif v.error:
            self._line(v, f"ERROR: {v.error}")
            if v not in self._failed:
                self._failed.append(v)
        elif v.cached:
            self._line(v, "CACHED")
        else:
            assert v.completed is not None
            self._line(v, f"DONE {format_duration(v.completed - (v.started or v.completed))}")

    def _on_log(self, event: LogEvent) -> None:
        v = self._vertex(event.vertex)
        if not v.open:
            self._header(v)
        splitter = v.splitters.get(event.stream)
        if splitter is None:
            splitter = v.splitters[event.stream] = LineSplitter()
        for line in splitter.feed(event.data):
            self._log_line(v, line, event.timestamp)

    def _log_line(self, v: _Vertex, line: str, timestamp: float) -> None:
        offset = timestamp - v.started if v.started is not None else 0.0
        text = f"{max(offset, 0.0):.3f} {line}"
        v.tail.append(text)
        if len(v.tail) > ERROR_TAIL_LINES:
            del v.tail[0]
        self._line(v, text)

    def _flush_logs(self, v: _Vertex) -> None:
        now = v.completed if v.completed is not None else self.clock()
        for stream in sorted(v.splitters):
            for line in v.splitters[stream].flush():
                self._log_line(v, line, now)

    def _on_status(self, event: StatusEvent) -> None:
        v = self._vertex(event.vertex)
        if not v.open:
            self._header(v)
        done = event.completed is not None
        last = v.status_printed.get(event.id)
        now = self.clock()
        if last is not None:
            printed_at, current, was_done = last
            if was_done or (
                not done and (current == event.current or now - printed_at < STATUS_INTERVAL)
            ):
                return
        v.status_printed[event.id] = (now, event.current, done)
        parts = [event.name or event.id]
        if event.total:
            parts.append(f"{format_size(event.current)} / {format_size(event.total)}")
        elif event.current:
            parts.append(format_size(event.current))
        if done:
            parts.append("done")
        elif event.started is not None:
            parts.append(format_duration(now - event.started))
        self._line(v, " ".join(parts))

    def _on_warning(self, event: WarningEvent) -> None:
        v = self._vertex(event.vertex)
        if not v.open:
            self._header(v)
        self._line(v, f"WARN: {event.short}")
        for detail in event.detail:
            self._line(v, detail)

    # -- output ---------------------------------------------------------------------------

    def _line(self, v: _Vertex, text: str) -> None:
        if self._deferred is not None and self._deferred is not v:
            self._flush_deferred()
        if self._last is not None and self._last is not v:
            self.out.write("\n")
        self._last = v
        self.out.write(f"#{v.number} {text}\n")

    def close(self) -> None:
        self._flush_deferred()
        for v in self._vertices.values():
            if v.number:
                # Output of a vertex that never completed (the stream ended first).
                if any(s.pending for s in v.splitters.values()):
                    self._flush_logs(v)
        for v in self._failed:
            self.out.write("------\n")
            self.out.write(f" > {v.name}:\n")
            for text in v.tail:
                self.out.write(f"#{v.number} {text}\n")
            self.out.write("------\n")
        self._failed.clear()
        self.out.flush()
