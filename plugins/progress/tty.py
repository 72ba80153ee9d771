"""``--progress tty``: a live view of the build for terminals.

Finished steps are printed once, in the order they finish, and scroll away like normal output;
below them a live area is redrawn in place (ANSI cursor movement) about ten times a second::

     => [1/3] local://src                                0.1s
     => CACHED [2/3] mkdir /out                           0.0s
    [+] Building 2.3s (2/3)
     => [3/3] RUN make                                    1.8s
     => => transferring ctx: 1.05kB                       0.2s
     => => # compiling foo.c

Running steps show their statuses and the last lines of their output. The live area is
clipped to the terminal's height and lines to its width. When the stream ends the final line
reads ``[+] Building 3.1s (3/3) FINISHED`` (or ``FAILED``, ``CANCELED``) and each failed
step is shown again with its last log lines, as in plain mode.
"""

from __future__ import annotations

import os
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

__all__ = ["TtyRenderer"]

LOG_TAIL = 6
"""Output lines shown under a running step."""
ERROR_TAIL = 10
"""Output lines shown again for a failed step at the end."""

_UP = "\x1b[{}A"
_CLEAR_LINE = "\x1b[K"
_CLEAR_DOWN = "\x1b[J"


@dataclass(slots=True)
class _Vertex:
    digest: str
    name: str
    order: int
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    error: str = ""
    printed_for: float | None = -1.0  # the ``completed`` value last printed as a final line
    statuses: dict[str, StatusEvent] = field(default_factory=dict)
    splitters: dict[int, LineSplitter] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.started is not None and self.completed is None


class TtyRenderer(BaseRenderer):
    """Redraws a live view of running steps on ``out`` (a terminal)."""

    interval = 0.1

    def __init__(
        self,
        out: TextIO,
        *,
        clock: Clock = time.time,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        super().__init__(out, clock=clock)
        self._width = width
        self._height = height
        self._vertices: dict[str, _Vertex] = {}
        self._live_lines = 0
        self._start: float | None = None
        self._failed: list[_Vertex] = []
        self._closed = False

    # -- state ----------------------------------------------------------------------------

    def feed(self, events: Sequence[Event]) -> None:
        for event in events:
            if type(event) is VertexEvent:
                self._on_vertex(event)
            elif type(event) is LogEvent:
                v = self._vertex(event.vertex)
                splitter = v.splitters.get(event.stream)
                if splitter is None:
                    splitter = v.splitters[event.stream] = LineSplitter()
                self._add_lines(v, splitter.feed(event.data))
            elif type(event) is StatusEvent:
                self._vertex(event.vertex).statuses[event.id] = event
            elif type(event) is WarningEvent:
                self._vertex(event.vertex).warnings.append(event.short)
        self._draw()

    def tick(self) -> None:
        self._draw()

    def _vertex(self, digest: str) -> _Vertex:
        v = self._vertices.get(digest)
        if v is None:
            v = self._vertices[digest] = _Vertex(digest, digest, len(self._vertices))
        return v

    def _on_vertex(self, event: VertexEvent) -> None:
        v = self._vertex(event.digest)
        v.name = event.name or v.name
        v.started, v.completed = event.started, event.completed
        v.cached, v.error = event.cached, event.error
        if event.started is not None and (self._start is None or event.started < self._start):
            self._start = event.started
        if v.error and not is_canceled(v.error) and v not in self._failed:
            self._failed.append(v)

    @staticmethod
    def _add_lines(v: _Vertex, lines: list[str]) -> None:
        if lines:
            v.tail.extend(lines)
            del v.tail[:-ERROR_TAIL]

    # -- drawing --------------------------------------------------------------------------

    def _size(self) -> tuple[int, int]:
        width, height = self._width, self._height
        if width is None or height is None:
            try:
                size = os.get_terminal_size(self.out.fileno())
                cols, rows = size.columns, size.lines
            except (OSError, ValueError, AttributeError):
                cols, rows = 80, 24
            width = width or cols or 80  # a pseudo-terminal may report 0x0
            height = height or rows or 24
        return max(width, 20), max(height, 4)

    def _fit(self, left: str, right: str, width: int) -> str:
        """``left`` and ``right`` on one line of ``width`` columns (left is cut first)."""
        room = width - len(right) - 1
        if len(left) > room:
            left = left[: max(room - 1, 0)] + "…" if room > 1 else ""
        return left + " " * (width - len(left) - len(right)) + right

    def _final_line(self, v: _Vertex, width: int) -> str:
        if is_canceled(v.error):
            prefix = " => CANCELED "
        elif v.error:
            prefix = " => ERROR "
        elif v.cached:
            prefix = " => CACHED "
        else:
            prefix = " => "
        assert v.completed is not None
        took = v.completed - (v.started if v.started is not None else v.completed)
        return self._fit(prefix + v.name, format_duration(took), width)

    def _running_lines(self, v: _Vertex, now: float, width: int) -> list[str]:
        assert v.started is not None
        lines = [self._fit(" => " + v.name, format_duration(now - v.started), width)]
        for s in v.statuses.values():
            amount = ""
            if s.total:
                amount = f" {format_size(s.current)} / {format_size(s.total)}"
            elif s.current:
                amount = f" {format_size(s.current)}"
            if s.completed is not None:
                right = "done"
            elif s.started is not None:
                right = format_duration(now - s.started)
            else:
                right = ""
            lines.append(self._fit(" => => " + (s.name or s.id) + amount, right, width))
        for w in v.warnings:
            lines.append(self._fit(" => => WARN: " + w, "", width))
        tail = v.tail[-LOG_TAIL:]
        partial = [sp.preview for sp in v.splitters.values() if sp.pending]
        for line in (tail + partial)[-LOG_TAIL:]:
            lines.append(self._fit(" => => # " + line, "", width))
        return lines

    def _draw(self) -> None:
        if self._closed:
            return
        now = self.clock()
        width, height = self._size()
        out: list[str] = []
        if self._live_lines:
            out.append("\r" + _UP.format(self._live_lines))
        # Steps that finished since the last frame are printed for good.
        finished = [
            v
            for v in self._vertices.values()
            if v.completed is not None and v.printed_for != v.completed
        ]
        finished.sort(key=lambda v: (v.completed or 0.0, v.order))
        for v in finished:
            v.printed_for = v.completed
            out.append(self._final_line(v, width) + _CLEAR_LINE + "\n")
        live = self._live(now, width, height)
        out.extend(line + _CLEAR_LINE + "\n" for line in live)
        out.append(_CLEAR_DOWN)
        self._live_lines = len(live)
        self.out.write("".join(out))
        self.out.flush()

    def _header(self, now: float, width: int, state: str = "") -> str:
        announced = len(self._vertices)
        done = sum(1 for v in self._vertices.values() if v.completed is not None)
        elapsed = now - self._start if self._start is not None else 0.0
        text = f"[+] Building {format_duration(elapsed)} ({done}/{announced})"
        return self._fit(text + (" " + state if state else ""), "", width)

    def _live(self, now: float, width: int, height: int) -> list[str]:
        running = sorted((v for v in self._vertices.values() if v.running), key=lambda v: v.order)
        lines = [self._header(now, width)]
        budget = height - 2
        for v in running:
            block = self._running_lines(v, now, width)
            if len(lines) + len(block) > budget:
                block = block[: max(budget - len(lines), 0)]
            lines.extend(block)
            if len(lines) >= budget:
                break
        return lines

    def close(self) -> None:
        if self._closed:
            return
        for v in self._vertices.values():
            for splitter in v.splitters.values():
                self._add_lines(v, splitter.flush())
        self._draw()
        self._closed = True
        now = self.clock()
        width, _ = self._size()
        if self._failed:
            state = "FAILED"
        elif any(is_canceled(v.error) for v in self._vertices.values()):
            state = "CANCELED"
        else:
            state = "FINISHED"
        ended = max(
            (v.completed for v in self._vertices.values() if v.completed is not None),
            default=now,
        )
        out: list[str] = []
        if self._live_lines:
            out.append("\r" + _UP.format(self._live_lines))
        out.append(self._header(ended, width, state) + _CLEAR_LINE)
        out.append("\n" + _CLEAR_DOWN)
        for v in self._failed:
            out.append("------\n")
            out.append(f" > {v.name}:\n")
            out.extend(f"{line}\n" for line in v.tail)
            out.append("------\n")
        self._live_lines = 0
        self.out.write("".join(out))
        self.out.flush()
