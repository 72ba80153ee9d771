"""Progress streams: multi-reader delivery, bounded coalescing, replay of shared vertices."""

from __future__ import annotations

import asyncio

from bkcore.progress import (
    Event,
    LogEvent,
    ProgressStream,
    SharedProgress,
    StatusEvent,
    VertexEvent,
    WarningEvent,
)


def test_every_reader_gets_events_from_when_it_subscribed() -> None:
    stream = ProgressStream()
    early = stream.subscribe()
    stream.write(VertexEvent("d1", "one"))
    late = stream.subscribe()
    stream.write(VertexEvent("d2", "two"))
    assert [e.digest for e in early.read_nowait() if isinstance(e, VertexEvent)] == ["d1", "d2"]
    assert [e.digest for e in late.read_nowait() if isinstance(e, VertexEvent)] == ["d2"]
    assert early.read_nowait() == []


def test_async_readers_wait_and_end_on_close() -> None:
    async def main() -> tuple[list[Event], list[Event]]:
        stream = ProgressStream()
        readers = [stream.subscribe(), stream.subscribe()]

        async def collect(i: int) -> list[Event]:
            return [e async for e in readers[i]]

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(collect(0)), tg.create_task(collect(1))]
            await asyncio.sleep(0)
            for i in range(3):
                stream.write(LogEvent("d", 1, b"x%d" % i, 0.0))
                await asyncio.sleep(0)
            stream.close()
        return tasks[0].result(), tasks[1].result()

    first, second = asyncio.run(main())
    assert first == second
    assert [e.data for e in first if isinstance(e, LogEvent)] == [b"x0", b"x1", b"x2"]


def test_subscribe_after_close_ends_at_once() -> None:
    stream = ProgressStream()
    stream.close()
    reader = stream.subscribe()
    stream.write(VertexEvent("d", "n"))
    assert asyncio.run(reader.next_batch()) == []


def test_lagging_reader_is_coalesced_and_bounded() -> None:
    stream = ProgressStream(max_buffered=50, max_log_bytes=100)
    reader = stream.subscribe()
    for i in range(10_000):
        stream.write(StatusEvent("pull", "d", current=i, total=10_000))
        stream.write(VertexEvent("d", "v", started=float(i)))
        stream.write(LogEvent("d", 1, b"0123456789", float(i)))
    stream.write(WarningEvent("d", 1, "careful"))
    batch = reader.read_nowait()
    assert len(batch) <= 100
    statuses = [e for e in batch if isinstance(e, StatusEvent)]
    # Older states were coalesced away; the latest state is kept.
    assert len(statuses) < 60 and statuses[-1].current == 9_999
    assert sorted(s.current for s in statuses) == [s.current for s in statuses]
    vertices = [e for e in batch if isinstance(e, VertexEvent)]
    assert len(vertices) < 60 and vertices[-1].started == 9_999.0
    logs = [e for e in batch if isinstance(e, LogEvent)]
    assert sum(len(e.data) for e in logs) <= 100
    assert logs[-1].timestamp == 9_999.0  # the newest output survives
    assert reader.dropped_log_bytes == 10 * 10_000 - sum(len(e.data) for e in logs)
    assert any(isinstance(e, WarningEvent) for e in batch)


def test_coalescing_keeps_write_order_of_latest_states() -> None:
    stream = ProgressStream(max_buffered=3)
    reader = stream.subscribe()
    stream.write(VertexEvent("a", "a"))
    stream.write(VertexEvent("b", "b"))
    stream.write(VertexEvent("a", "a", started=1.0))
    stream.write(VertexEvent("b", "b", started=2.0))
    batch = reader.read_nowait()
    assert [(e.digest, e.started) for e in batch if isinstance(e, VertexEvent)] == [
        ("a", 1.0),
        ("b", 2.0),
    ]


def test_shared_progress_fans_out_and_replays_to_late_joiners() -> None:
    shared = SharedProgress(VertexEvent("d", "run", ("in",)))
    first, second = ProgressStream(), ProgressStream()
    r1, r2 = first.subscribe(), second.subscribe()
    shared.add(first)
    shared.write(shared.state)
    shared.vertex(started=1.0)
    shared.log(1, b"hello")
    shared.status("step", current=1, total=2)
    shared.status("step", current=2, total=2, completed=3.0)
    shared.add(second)  # late joiner
    shared.log(2, b"world")
    shared.vertex(completed=4.0)

    got1, got2 = r1.read_nowait(), r2.read_nowait()
    assert len(got1) == 7
    # The late joiner sees the current state of each item, then the live events.
    assert [type(e).__name__ for e in got2] == [
        "VertexEvent",
        "LogEvent",
        "StatusEvent",
        "LogEvent",
        "VertexEvent",
    ]
    assert isinstance(got2[0], VertexEvent) and got2[0].started == 1.0
    assert isinstance(got2[2], StatusEvent) and got2[2].current == 2 and got2[2].vertex == "d"
    assert isinstance(got2[-1], VertexEvent) and got2[-1].completed == 4.0
    assert got2[-1].inputs == ("in",) and got2[-1].name == "run"

    shared.remove(first)
    shared.log(1, b"only second")
    assert r1.read_nowait() == []
    assert [e.data for e in r2.read_nowait() if isinstance(e, LogEvent)] == [b"only second"]


def test_shared_progress_history_is_bounded() -> None:
    shared = SharedProgress(VertexEvent("d", "run"), max_log_bytes=1000)
    for i in range(20_000):
        shared.log(1, b"x" * 10)
        shared.status("s", current=i)
    history = shared.history()
    assert len(history) <= 101
    assert sum(len(e.data) for e in history if isinstance(e, LogEvent)) <= 1000
