"""The tty renderer: what a terminal shows after its ANSI output, on synthetic streams."""

from __future__ import annotations

import io
import re

from bkcore.plugins.progress.tty import TtyRenderer
from bkcore.progress import LogEvent, StatusEvent, VertexEvent

A = "sha256:aaa"
B = "sha256:bbb"
C = "sha256:ccc"

_CSI = re.compile(r"\x1b\[(\d*)([AKJ])")


def screen(raw: str) -> list[str]:
    """Replay ``raw`` on a minimal terminal (cursor up, clear line/down, CR, LF)."""
    rows: list[str] = [""]
    row = col = 0
    pos = 0
    while pos < len(raw):
        m = _CSI.match(raw, pos)
        if m:
            n, op = int(m.group(1) or 1), m.group(2)
            if op == "A":
                row = max(row - n, 0)
            elif op == "K":
                rows[row] = rows[row][:col]
            else:  # J: clear to the end of the screen
                rows[row] = rows[row][:col]
                del rows[row + 1 :]
            pos = m.end()
            continue
        ch = raw[pos]
        pos += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0
            if row == len(rows):
                rows.append("")
        else:
            line = rows[row].ljust(col)
            rows[row] = line[:col] + ch + line[col + 1 :]
            col += 1
    while rows and rows[-1] == "":
        rows.pop()
    return [r.rstrip() for r in rows]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def squash(line: str) -> str:
    return " ".join(line.split())


def make(clock: Clock, height: int = 30) -> tuple[TtyRenderer, io.StringIO]:
    out = io.StringIO()
    return TtyRenderer(out, clock=clock, width=60, height=height), out


def test_live_view_shows_running_steps_statuses_and_log_tail() -> None:
    clock = Clock(12.0)
    r, out = make(clock)
    r.feed(
        [
            VertexEvent(A, "[1/2] local://src"),
            VertexEvent(B, "[2/2] RUN make", inputs=(A,)),
            VertexEvent(A, "[1/2] local://src", started=10.0, completed=10.5),
            VertexEvent(B, "[2/2] RUN make", inputs=(A,), started=10.5),
            StatusEvent("transferring src:", B, current=2048, started=11.0),
            *[LogEvent(B, 1, f"line {i}\n".encode(), 11.0) for i in range(8)],
            LogEvent(B, 1, b"partial", 11.5),
        ]
    )
    shown = [squash(line) for line in screen(out.getvalue())]
    assert shown == [
        "=> [1/2] local://src 0.5s",
        "[+] Building 2.0s (1/2)",
        "=> [2/2] RUN make 1.5s",
        "=> => transferring src: 2.05kB 1.0s",
        "=> => # line 3",
        "=> => # line 4",
        "=> => # line 5",
        "=> => # line 6",
        "=> => # line 7",
        "=> => # partial",
    ]
    # Lines fit the terminal width.
    assert all(len(line) <= 60 for line in screen(out.getvalue()))


def test_timers_advance_on_tick_and_frames_redraw_in_place() -> None:
    clock = Clock(11.0)
    r, out = make(clock)
    r.feed([VertexEvent(A, "RUN sleep 5", started=10.0)])
    for t in (11.5, 12.0, 13.3):
        clock.now = t
        r.tick()
    assert [squash(line) for line in screen(out.getvalue())] == [
        "[+] Building 3.3s (0/1)",
        "=> RUN sleep 5 3.3s",
    ]


def test_final_frame_lists_every_step_once_with_cached_and_error_markers() -> None:
    clock = Clock(20.0)
    r, out = make(clock)
    r.feed([VertexEvent(A, "base", started=10.0, completed=10.0, cached=True)])
    r.feed([VertexEvent(B, "RUN ok", started=10.0)])
    clock.now = 11.0
    r.tick()
    r.feed([VertexEvent(B, "RUN ok", started=10.0, completed=11.0)])
    r.feed([VertexEvent(C, "RUN bad", started=11.0)])
    r.feed([LogEvent(C, 2, b"oops\n", 11.5)])
    r.feed(
        [
            VertexEvent(C, "RUN bad", started=11.0, completed=12.0, error="exit code: 2"),
            VertexEvent(C, "RUN bad", started=11.0, completed=12.0, error="exit code: 2"),
        ]
    )
    r.close()
    r.close()  # idempotent
    assert [squash(line) for line in screen(out.getvalue())] == [
        "=> CACHED base 0.0s",
        "=> RUN ok 1.0s",
        "=> ERROR RUN bad 1.0s",
        "[+] Building 2.0s (3/3) FAILED",
        "------",
        "> RUN bad:",
        "oops",
        "------",
    ]


def test_successful_build_ends_finished_and_cancel_is_not_an_error_box() -> None:
    clock = Clock(5.0)
    r, out = make(clock)
    r.feed([VertexEvent(A, "x", started=1.0, completed=2.0)])
    r.close()
    assert [squash(s) for s in screen(out.getvalue())] == [
        "=> x 1.0s",
        "[+] Building 1.0s (1/1) FINISHED",
    ]
    r, out = make(clock)
    r.feed([VertexEvent(A, "y", started=1.0, completed=1.5, error="context canceled")])
    r.close()
    assert [squash(s) for s in screen(out.getvalue())] == [
        "=> CANCELED y 0.5s",
        "[+] Building 0.5s (1/1) CANCELED",
    ]


def test_live_area_is_clipped_to_the_terminal_height() -> None:
    clock = Clock(2.0)
    r, out = make(clock, height=6)
    r.feed([VertexEvent(f"sha256:{i}", f"step {i}", started=1.0) for i in range(10)])
    shown = screen(out.getvalue())
    assert len(shown) == 4
    assert squash(shown[0]) == "[+] Building 1.0s (0/10)"
    assert [squash(s) for s in shown[1:]] == ["=> step 0 1.0s", "=> step 1 1.0s", "=> step 2 1.0s"]


def test_long_names_are_cut_to_the_width() -> None:
    clock = Clock(2.0)
    r, out = make(clock)
    r.feed([VertexEvent(A, "RUN " + "x" * 200, started=1.0)])
    lines = screen(out.getvalue())
    assert len(lines[1]) == 60
    assert lines[1].endswith("1.0s")
    assert "…" in lines[1]


def test_size_falls_back_to_80x24_without_a_terminal() -> None:
    class NoTerminal(io.StringIO):
        def fileno(self) -> int:
            raise OSError("not a terminal")

    clock = Clock(2.0)
    r = TtyRenderer(NoTerminal(), clock=clock)
    r.feed([VertexEvent(A, "x" * 200, started=1.0)])
    assert r._size() == (80, 24)
    assert max(len(line) for line in screen(r.out.getvalue())) == 80  # type: ignore[attr-defined]
