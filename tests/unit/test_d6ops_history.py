"""Build history: records of Solves (started, completed, failed), ListenBuildHistory's
replay, live events, EarlyExit/ActiveOnly/Ref, UpdateBuildHistory (pin, delete, NotFound),
persistence across restarts, limits that spare pinned records, crash leftovers removed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from bkcore.api.history import BuildHistory
from bkcore.api.pb import control as cpb
from bkcore.errors import BkError

T = cpb.BuildHistoryEventType


def _solve(ref: str, **kw: object) -> cpb.SolveRequest:
    return cpb.SolveRequest(ref=ref, **kw)  # type: ignore[arg-type]


async def _replay(h: BuildHistory, **kw: object) -> list[tuple[T, str]]:
    req = cpb.BuildHistoryRequest(early_exit=True, **kw)  # type: ignore[arg-type]
    return [(e.type, e.record.ref) async for e in h.listen(req)]


def test_solves_are_recorded_and_persist(tmp_path: Path) -> None:
    h = BuildHistory(tmp_path)
    h.start_solve(
        _solve(
            "b1",
            frontend="dockerfile.v0",
            frontend_attrs={"target": "x"},
            exporter="local",
            exporter_attrs={"dest": "out"},
        )
    )
    h.start_solve(_solve("internal", internal=True))
    h.start_solve(_solve("b2"))
    assert asyncio.run(_replay(h)) == [(T.STARTED, "b1"), (T.STARTED, "b2")]
    assert asyncio.run(_replay(h, active_only=True, ref="b2")) == [(T.STARTED, "b2")]
    h.finish_solve("b1", {"containerimage.digest": "sha256:x"})
    h.finish_solve("b2", error=BkError("step 3 failed"))
    h.finish_solve("internal")  # never started: ignored
    again = BuildHistory(tmp_path)  # a restarted daemon
    assert asyncio.run(_replay(again)) == [(T.COMPLETE, "b1"), (T.COMPLETE, "b2")]
    assert asyncio.run(_replay(again, active_only=True)) == []

    async def records() -> list[cpb.BuildHistoryRecord]:
        req = cpb.BuildHistoryRequest(early_exit=True)
        return [e.record async for e in again.listen(req)]

    ok, failed = asyncio.run(records())
    assert ok.frontend == "dockerfile.v0" and ok.frontend_attrs == {"target": "x"}
    assert [(e.type, e.attrs) for e in ok.exporters] == [("local", {"dest": "out"})]
    assert ok.exporter_response == {"containerimage.digest": "sha256:x"}
    assert ok.completed_at.seconds >= ok.created_at.seconds > 0 and not ok.error.code
    assert failed.error.code != 0
    assert "step 3 failed" in failed.error.message


def test_live_events_and_update(tmp_path: Path) -> None:
    h = BuildHistory(tmp_path)
    h.start(ref="old")
    h.finish("old")

    async def main() -> list[tuple[T, str, bool]]:
        seen: list[tuple[T, str, bool]] = []

        async def follow() -> None:
            async for e in h.listen(cpb.BuildHistoryRequest()):
                seen.append((e.type, e.record.ref, e.record.pinned))
                if e.type == T.DELETED:
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0)
        h.start(ref="new")
        h.finish("new")
        h.update(cpb.UpdateBuildHistoryRequest(ref="new", pinned=True))
        h.update(cpb.UpdateBuildHistoryRequest(ref="old", delete=True))
        await asyncio.wait_for(task, 5)
        return seen

    assert asyncio.run(main()) == [
        (T.COMPLETE, "old", False),
        (T.STARTED, "new", False),
        (T.COMPLETE, "new", False),
        (T.COMPLETE, "new", True),
        (T.DELETED, "old", False),
    ]
    with pytest.raises(GRPCError) as info:
        h.update(cpb.UpdateBuildHistoryRequest(ref="old", delete=True))
    assert info.value.status == Status.NOT_FOUND
    assert BuildHistory(tmp_path).records()[0].pinned


def test_limits_spare_pinned_records_and_crash_leftovers_go(tmp_path: Path) -> None:
    h = BuildHistory(tmp_path, max_entries=2, max_age=100.0)
    for i, ref in enumerate(("a", "b", "c")):
        h.start(ref, now=1000.0 + i)
        h.finish(ref, now=1000.0 + i)
        if ref == "a":
            h.update(cpb.UpdateBuildHistoryRequest(ref="a", pinned=True))
    assert [r.ref for r in h.records()] == ["a", "c"]  # b went, a is pinned
    h.start("d", now=2000.0)
    h.finish("d", now=2000.0)  # c is older than max_age now
    assert [r.ref for r in h.records()] == ["a", "d"]
    (tmp_path / "history" / ".tmp-x").write_text("{")
    (tmp_path / "history" / "junk.json").write_text("not json")
    assert [r.ref for r in BuildHistory(tmp_path).records()] == ["a", "d"]
    assert sorted(p.name for p in (tmp_path / "history").iterdir()) == sorted(
        p.name for p in (tmp_path / "history").glob("*.json")
    )
    assert len(list((tmp_path / "history").iterdir())) == 2


def test_step_counts_come_from_the_progress_events(tmp_path: Path) -> None:
    from bkcore.progress import LogEvent, VertexEvent

    h = BuildHistory(tmp_path)
    h.start("s")
    events = [
        VertexEvent("sha256:a", "a", started=1.0),
        VertexEvent("sha256:a", "a", started=1.0, completed=2.0),
        VertexEvent("sha256:b", "b", cached=True, started=1.0, completed=1.0),
        VertexEvent("sha256:c", "c", started=1.0, completed=3.0, error="boom"),
        VertexEvent("sha256:d", "d"),
        LogEvent(vertex="sha256:a", stream=1, data=b"x", timestamp=1.5),
    ]
    h.finish_solve("s", {}, events=events)
    (record,) = BuildHistory(tmp_path).records()
    proto = record.to_proto()
    assert (proto.num_total_steps, proto.num_completed_steps, proto.num_cached_steps) == (4, 2, 1)
