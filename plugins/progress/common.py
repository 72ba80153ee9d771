"""Pieces the progress renderers share: the renderer driver, durations, sizes, log lines.

A renderer is built as ``Renderer(out)`` (``out`` a text stream, normally stderr) and driven by
``await renderer.run(reader)``, which consumes a :class:`bkcore.progress.ProgressReader` until
the stream closes. Rendering itself is synchronous (:meth:`feed`, :meth:`close`) so tests can
drive it with synthetic events and a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from bkcore.progress import Event, ProgressReader

__all__ = [
    "CANCELED",
    "BaseRenderer",
    "Clock",
    "LineSplitter",
    "format_duration",
    "format_size",
    "is_canceled",
]

CANCELED = "context canceled"
"""The error text of a vertex stopped by cancellation (spec/solver.md §8)."""


def is_canceled(error: str) -> bool:
    """True for the error text of a vertex that was stopped rather than failed."""
    return error in (CANCELED, "canceled")


Clock = Callable[[], float]


def format_duration(seconds: float) -> str:
    """``0.0s``, ``12.3s``; never negative."""
    return f"{max(seconds, 0.0):.1f}s"


def format_size(n: int) -> str:
    """A byte count in the units BuildKit's progress shows (``2B``, ``1.05kB``, ``3.40MB``)."""
    if n < 1000:
        return f"{n}B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000.0
        if value < 1000.0 or unit == "TB":
            return f"{value:.2f}{unit}"
    raise AssertionError("unreachable")


class LineSplitter:
    """Splits raw output chunks of one (vertex, stream) into complete text lines."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    @property
    def pending(self) -> bool:
        """True when an unterminated line is buffered."""
        return bool(self._pending)

    @property
    def preview(self) -> str:
        """The unterminated line as text (for live views)."""
        return _text(self._pending)

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by ``data`` (without their newlines)."""
        data = self._pending + data
        *lines, self._pending = data.replace(b"\r\n", b"\n").split(b"\n")
        return [_text(line) for line in lines]

    def flush(self) -> list[str]:
        """The unterminated last line, if any."""
        rest, self._pending = self._pending, b""
        return [_text(rest)] if rest else []


def _text(raw: bytes) -> str:
    # Carriage returns redraw a line on a terminal: keep only what was drawn last.
    line = raw.decode("utf-8", "replace").rstrip("\r")
    if "\r" in line:
        line = line.rsplit("\r", 1)[-1]
    return line


class BaseRenderer:
    """Reads batches from a progress reader and hands them to :meth:`feed`.

    ``interval`` (seconds) makes :meth:`run` call :meth:`tick` that often even when no event
    arrives (live views redraw their timers); ``None`` waits for events only.
    """

    interval: float | None = None

    def __init__(self, out: TextIO, *, clock: Clock = time.time) -> None:
        self.out = out
        self.clock = clock

    def feed(self, events: Sequence[Event]) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Called every ``interval`` seconds while nothing arrives (default: nothing)."""

    def close(self) -> None:
        """The stream ended: write what is left (summaries, final frame)."""

    async def run(self, reader: ProgressReader) -> None:
        """Render until the stream closes; :meth:`close` runs on every exit path."""
        import asyncio

        try:
            while True:
                if self.interval is None:
                    batch = await reader.next_batch()
                else:
                    try:
                        batch = await asyncio.wait_for(reader.next_batch(), self.interval)
                    except TimeoutError:
                        self.tick()
                        continue
                if not batch:
                    return
                self.feed(batch)
        finally:
            # Events that arrived with the cancellation are still shown.
            rest = reader.read_nowait()
            if rest:
                self.feed(rest)
            self.close()
            self.out.flush()
