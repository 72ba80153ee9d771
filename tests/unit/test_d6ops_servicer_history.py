"""The Control servicer records Solves in the build history and serves ListenBuildHistory /
UpdateBuildHistory from it (in-memory gRPC, a fake controller); UNIMPLEMENTED without one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from bkcore import llb
from bkcore.api import methods
from bkcore.api import server as srv
from bkcore.api.codec import GoCodec
from bkcore.api.errors import StatusDetailsCodec
from bkcore.api.history import BuildHistory
from bkcore.api.pb import control as cpb
from bkcore.controller import BuildOptions, BuildResponse
from bkcore.errors import BkError
from bkcore.llb import pb
from bkcore.progress import ProgressStream

T = cpb.BuildHistoryEventType


class FakeController:
    engine = None

    async def build(
        self, options: BuildOptions, *, progress: ProgressStream, definition: Any = None
    ) -> BuildResponse:
        if "fail" in options.source:
            raise BkError("the step failed")
        return BuildResponse({"k": "v"})


def _def() -> pb.Definition:
    data = llb.scratch().file(llb.mkfile("/f", 0o644, b"x")).marshal().to_bytes()
    return pb.Definition().parse(data)


async def _call(channel: Any, path: str, request: Any, reply: Any, stream: bool = False) -> Any:
    card = Cardinality.UNARY_STREAM if stream else Cardinality.UNARY_UNARY
    async with channel.request(path, card, type(request), reply) as s:
        await s.send_message(request, end=True)
        if stream:
            return [m async for m in s]
        return await s.recv_message()


def _serve(tmp_path: Path, history: BuildHistory | None, body: Any) -> None:
    async def main() -> None:
        servicer = srv.ControlServicer(
            FakeController(),  # type: ignore[arg-type]
            srv.DaemonSettings(root=tmp_path),
            history=history,
        )
        async with ChannelFor(
            [servicer], codec=GoCodec(), status_details_codec=StatusDetailsCodec()
        ) as channel:
            await body(channel)

    asyncio.run(main())


def test_solves_are_recorded_and_served(tmp_path: Path) -> None:
    history = BuildHistory(tmp_path)

    async def body(channel: Any) -> None:
        await _call(
            channel,
            methods.CONTROL_SOLVE,
            cpb.SolveRequest(ref="ok", definition=_def(), exporter="image"),
            cpb.SolveResponse,
        )
        with pytest.raises(GRPCError):
            await _call(
                channel,
                methods.CONTROL_SOLVE,
                cpb.SolveRequest(ref="fail", definition=_def()),
                cpb.SolveResponse,
            )
        events = await _call(
            channel,
            methods.CONTROL_LISTEN_BUILD_HISTORY,
            cpb.BuildHistoryRequest(early_exit=True),
            cpb.BuildHistoryEvent,
            stream=True,
        )
        records = {e.record.ref: e.record for e in events}
        assert [e.type for e in events] == [T.COMPLETE, T.COMPLETE]
        assert records["ok"].exporter_response == {"k": "v"}
        assert [x.type for x in records["ok"].exporters] == ["image"]
        assert records["fail"].error.code != 0
        assert "the step failed" in records["fail"].error.message
        await _call(
            channel,
            methods.CONTROL_UPDATE_BUILD_HISTORY,
            cpb.UpdateBuildHistoryRequest(ref="ok", pinned=True),
            cpb.UpdateBuildHistoryResponse,
        )
        with pytest.raises(GRPCError) as info:
            await _call(
                channel,
                methods.CONTROL_UPDATE_BUILD_HISTORY,
                cpb.UpdateBuildHistoryRequest(ref="nope", delete=True),
                cpb.UpdateBuildHistoryResponse,
            )
        assert info.value.status == Status.NOT_FOUND

    _serve(tmp_path, history, body)
    assert [r.ref for r in history.records() if r.pinned] == ["ok"]


def test_without_history_the_methods_are_unimplemented(tmp_path: Path) -> None:
    async def body(channel: Any) -> None:
        with pytest.raises(GRPCError) as info:
            await _call(
                channel,
                methods.CONTROL_LISTEN_BUILD_HISTORY,
                cpb.BuildHistoryRequest(early_exit=True),
                cpb.BuildHistoryEvent,
                stream=True,
            )
        assert info.value.status == Status.UNIMPLEMENTED

    _serve(tmp_path, None, body)
