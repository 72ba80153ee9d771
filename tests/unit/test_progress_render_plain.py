"""The plain renderer: BuildKit-style ``#N`` blocks from synthetic event streams."""

from __future__ import annotations

import asyncio
import io

from bkcore.plugins.progress.plain import PlainRenderer
from bkcore.progress import (
    Event,
    LogEvent,
    ProgressStream,
    StatusEvent,
    VertexEvent,
    WarningEvent,
)

A = "sha256:aaa"
B = "sha256:bbb"


def render(events: list[Event], now: float = 100.0) -> str:
    out = io.StringIO()
    renderer = PlainRenderer(out, clock=lambda: now)
    renderer.feed(events)
    renderer.close()
    return out.getvalue()


def test_announced_vertices_print_nothing_until_they_start() -> None:
    text = render([VertexEvent(A, "[1/2] one"), VertexEvent(B, "[2/2] two", inputs=(A,))])
    assert text == ""


def test_run_block_with_logs_and_done() -> None:
    text = render(
        [
            VertexEvent(A, "[1/1] RUN echo hi"),
            VertexEvent(A, "[1/1] RUN echo hi", started=10.0),
            LogEvent(A, 1, b"hel", 10.25),
            LogEvent(A, 1, b"lo\nworld\n", 10.5),
            VertexEvent(A, "[1/1] RUN echo hi", started=10.0, completed=11.27),
        ]
    )
    assert text.splitlines() == [
        "#1 [1/1] RUN echo hi",
        "#1 0.500 hello",
        "#1 0.500 world",
        "#1 DONE 1.3s",
    ]


def test_cached_vertex_and_numbering_in_start_order() -> None:
    text = render(
        [
            VertexEvent(A, "first"),
            VertexEvent(B, "second"),
            VertexEvent(B, "second", started=1.0, completed=1.0, cached=True),
            VertexEvent(A, "first", started=2.0),
            VertexEvent(A, "first", started=2.0, completed=2.5),
        ]
    )
    assert text == "#1 second\n#1 CACHED\n\n#2 first\n#2 DONE 0.5s\n"


def test_interleaved_vertices_are_separated_by_blank_lines() -> None:
    text = render(
        [
            VertexEvent(A, "a", started=1.0),
            VertexEvent(B, "b", started=1.0),
            LogEvent(A, 1, b"x\n", 1.5),
            VertexEvent(A, "a", started=1.0, completed=2.0),
            VertexEvent(B, "b", started=1.0, completed=3.0),
        ]
    )
    assert text == ("#1 a\n\n#2 b\n\n#1 0.500 x\n#1 DONE 1.0s\n\n#2 DONE 2.0s\n")


def test_error_prints_error_line_and_a_summary_with_the_log_tail() -> None:
    logs = [LogEvent(A, 2, f"line{i}\n".encode(), 1.0 + i / 10) for i in range(12)]
    text = render(
        [
            VertexEvent(A, "[2/2] RUN false", started=1.0),
            *logs,
            LogEvent(A, 2, b"unterminated", 2.5),
            VertexEvent(
                A,
                "[2/2] RUN false",
                started=1.0,
                completed=3.0,
                error='process "false" did not complete successfully: exit code: 1',
            ),
        ]
    )
    lines = text.splitlines()
    # The unterminated last chunk is flushed before the end line (stamped at completion).
    assert lines[13] == "#1 2.000 unterminated"
    assert lines[14] == '#1 ERROR: process "false" did not complete successfully: exit code: 1'
    box = lines[15:]
    assert box[0] == "------"
    assert box[1] == " > [2/2] RUN false:"
    assert box[2:-1] == [
        "#1 0.300 line3",
        "#1 0.400 line4",
        "#1 0.500 line5",
        "#1 0.600 line6",
        "#1 0.700 line7",
        "#1 0.800 line8",
        "#1 0.900 line9",
        "#1 1.000 line10",
        "#1 1.100 line11",
        "#1 2.000 unterminated",
    ]
    assert box[-1] == "------"


def test_canceled_vertex_is_not_an_error_box() -> None:
    text = render(
        [
            VertexEvent(A, "sleep", started=1.0),
            VertexEvent(A, "sleep", started=1.0, completed=1.5, error="context canceled"),
        ]
    )
    assert text == "#1 sleep\n#1 CANCELED\n"


def test_statuses_show_sizes_and_completion_and_are_throttled() -> None:
    now = [10.0]
    out = io.StringIO()
    renderer = PlainRenderer(out, clock=lambda: now[0])
    renderer.feed([VertexEvent(A, "local://ctx", started=9.0)])
    renderer.feed([StatusEvent("transferring ctx:", A, current=2000, started=9.5)])
    now[0] = 10.2  # too soon for another in-progress line
    renderer.feed([StatusEvent("transferring ctx:", A, current=3000, started=9.5)])
    now[0] = 11.5
    renderer.feed([StatusEvent("transferring ctx:", A, current=4000, started=9.5)])
    renderer.feed(
        [StatusEvent("layer", A, current=1_050_000, total=3_400_000, started=9.0, completed=11.5)]
    )
    renderer.feed([StatusEvent("transferring ctx:", A, current=5000, started=9.5, completed=11.6)])
    renderer.feed([StatusEvent("transferring ctx:", A, current=5000, started=9.5, completed=11.6)])
    renderer.feed([VertexEvent(A, "local://ctx", started=9.0, completed=11.6)])
    renderer.close()
    assert out.getvalue().splitlines() == [
        "#1 local://ctx",
        "#1 transferring ctx: 2.00kB 0.5s",
        "#1 transferring ctx: 4.00kB 2.0s",
        "#1 layer 1.05MB / 3.40MB done",
        "#1 transferring ctx: 5.00kB done",
        "#1 DONE 2.6s",
    ]


def test_restarted_vertex_prints_a_new_header_and_duplicates_are_ignored() -> None:
    started = VertexEvent(A, "docker-image://x", started=1.0)
    done = VertexEvent(A, "docker-image://x", started=1.0, completed=1.5)
    other = VertexEvent(B, "other", started=2.0)
    again = VertexEvent(A, "docker-image://x", started=3.0)
    out = io.StringIO()
    r = PlainRenderer(out)
    for batch in ([started, started], [done], [done], [other], [again], [done]):
        r.feed(batch)
    r.feed([VertexEvent(A, "docker-image://x", started=3.0, completed=4.0)])
    r.close()
    assert out.getvalue().splitlines() == [
        "#1 docker-image://x",
        "#1 DONE 0.5s",
        "",
        "#2 other",
        "",
        "#1 docker-image://x",
        "#1 DONE 1.0s",
    ]


def test_done_then_restart_with_nothing_between_is_one_block() -> None:
    out = io.StringIO()
    r = PlainRenderer(out)
    r.feed([VertexEvent(A, "mkfile /x", started=1.0)])
    r.feed([VertexEvent(A, "mkfile /x", started=1.0, completed=1.1)])
    r.feed([VertexEvent(A, "mkfile /x", started=1.2, completed=1.2, cached=True)])
    r.close()
    assert out.getvalue() == "#1 mkfile /x\n#1 CACHED\n"


def test_restart_within_one_batch_is_one_block() -> None:
    text = render(
        [
            VertexEvent(A, "mkfile /x", started=1.0),
            VertexEvent(A, "mkfile /x", started=1.0, completed=1.1),
            VertexEvent(A, "mkfile /x", started=1.2),
            VertexEvent(A, "mkfile /x", started=1.2, completed=1.5),
            VertexEvent(B, "next", started=1.5, completed=1.5, cached=True),
        ]
    )
    assert text == "#1 mkfile /x\n#1 DONE 0.3s\n\n#2 next\n#2 CACHED\n"


def test_coalesced_completion_alone_prints_header_and_end() -> None:
    assert render([VertexEvent(A, "x", started=1.0, completed=1.25)]) == "#1 x\n#1 DONE 0.2s\n"


def test_warning_and_carriage_return_progress_bars() -> None:
    text = render(
        [
            VertexEvent(A, "w", started=1.0),
            WarningEvent(A, 1, "deprecated thing", ("use the new thing",)),
            LogEvent(A, 1, b"10%\r50%\r100%\n", 1.5),
        ]
    )
    assert text.splitlines() == [
        "#1 w",
        "#1 WARN: deprecated thing",
        "#1 use the new thing",
        "#1 0.500 100%",
    ]


def test_run_drives_a_live_stream_until_it_closes() -> None:
    async def main() -> str:
        stream = ProgressStream()
        out = io.StringIO()
        renderer = PlainRenderer(out)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(renderer.run(stream.subscribe()))
            await asyncio.sleep(0)
            stream.write(VertexEvent(A, "step", started=1.0))
            await asyncio.sleep(0)
            stream.write(LogEvent(A, 1, b"out\n", 2.0))
            stream.write(VertexEvent(A, "step", started=1.0, completed=2.0))
            stream.close()
        return out.getvalue()

    assert asyncio.run(main()) == "#1 step\n#1 1.000 out\n#1 DONE 1.0s\n"


def test_run_renders_what_arrived_when_cancelled() -> None:
    async def main() -> str:
        stream = ProgressStream()
        out = io.StringIO()
        renderer = PlainRenderer(out)
        task = asyncio.create_task(renderer.run(stream.subscribe()))
        await asyncio.sleep(0)
        stream.write(VertexEvent(A, "step", started=1.0))
        stream.write(VertexEvent(A, "step", started=1.0, completed=1.5, error="boom"))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return out.getvalue()

    assert asyncio.run(main()).splitlines() == [
        "#1 step",
        "#1 ERROR: boom",
        "------",
        " > step:",
        "------",
    ]


def test_exporter_cancellation_text_also_reads_canceled() -> None:
    text = render(
        [
            VertexEvent(
                A, "exporting to client directory", started=1.0, completed=1.5, error="canceled"
            )
        ]
    )
    assert text == "#1 exporting to client directory\n#1 CANCELED\n"
