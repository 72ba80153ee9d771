"""Build history over the wire: a daemon records each Solve; ListenBuildHistory (EarlyExit)
lists them with exporter response / error status, UpdateBuildHistory pins and deletes, and a
restarted daemon on the same root lists the same records."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Cardinality, Status

from bkcore import llb
from bkcore.api import methods
from bkcore.api.client import Client
from bkcore.api.pb import control as cpb
from bkcore.llb import pb

pytestmark = pytest.mark.integration

TIMEOUT = 60.0
T = cpb.BuildHistoryEventType


class Daemon:
    def __init__(self, root: Path, *args: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bkhist-", dir="/tmp"))
        self.address = f"unix://{self.dir}/bk.sock"
        self.log = self.dir / "daemon.log"
        argv = [sys.executable, "-m", "bkcore", "--root", str(root), "daemon"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*argv, "--addr", self.address, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + TIMEOUT
        while b"listening on" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"daemon did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        return code


def call(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


def to_def(state: Any) -> pb.Definition:
    return pb.Definition().parse(state.marshal().to_bytes())


async def history(address: str, **kw: Any) -> list[cpb.BuildHistoryEvent]:
    async with Client(address) as client:
        request = cpb.BuildHistoryRequest(early_exit=True, **kw)
        async with client.channel().request(
            methods.CONTROL_LISTEN_BUILD_HISTORY,
            Cardinality.UNARY_STREAM,
            cpb.BuildHistoryRequest,
            cpb.BuildHistoryEvent,
        ) as stream:
            await stream.send_message(request, end=True)
            return [m async for m in stream]


async def update(address: str, **kw: Any) -> Status:
    async with Client(address) as client:
        async with client.channel().request(
            methods.CONTROL_UPDATE_BUILD_HISTORY,
            Cardinality.UNARY_UNARY,
            cpb.UpdateBuildHistoryRequest,
            cpb.UpdateBuildHistoryResponse,
        ) as stream:
            await stream.send_message(cpb.UpdateBuildHistoryRequest(**kw), end=True)
            try:
                await stream.recv_message()
                await stream.recv_trailing_metadata()
            except Exception as exc:
                return Status(getattr(exc, "status", Status.UNKNOWN))
            return Status.OK


def test_history_is_recorded_listed_updated_and_kept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    d = Daemon(root)
    try:

        async def builds() -> None:
            async with Client(d.address) as client:
                ok = llb.scratch().file(llb.mkfile("/a", 0o644, b"a"))
                await client.solve(
                    cpb.SolveRequest(
                        ref="hist-ok", definition=to_def(ok), frontend_attrs={"k": "v"}
                    )
                )
                bad = llb.scratch().file(llb.mkfile("/no/such/dir/f", 0o644, b"x"))
                with pytest.raises(Exception, match="no/such/dir"):
                    await client.solve(cpb.SolveRequest(ref="hist-bad", definition=to_def(bad)))
                await client.solve(
                    cpb.SolveRequest(ref="hist-internal", definition=to_def(ok), internal=True)
                )

        call(builds())
        events = call(history(d.address))
        by_ref = {e.record.ref: e for e in events}
        assert sorted(by_ref) == ["hist-bad", "hist-ok"]
        assert all(e.type == T.COMPLETE for e in events)
        ok, bad = by_ref["hist-ok"].record, by_ref["hist-bad"].record
        assert ok.frontend_attrs == {"k": "v"} and ok.error.code == 0
        assert ok.completed_at.seconds >= ok.created_at.seconds > 0
        assert bad.error.code != 0 and "no/such/dir" in bad.error.message
        assert [e.record.ref for e in call(history(d.address, ref="hist-bad"))] == ["hist-bad"]
        assert call(history(d.address, active_only=True)) == []
        assert call(update(d.address, ref="hist-ok", pinned=True)) == Status.OK
        assert call(update(d.address, ref="hist-bad", delete=True)) == Status.OK
        assert call(update(d.address, ref="hist-bad", delete=True)) == Status.NOT_FOUND
    finally:
        assert d.stop() == 0
    again = Daemon(root)
    try:
        (event,) = call(history(again.address))
        assert event.record.ref == "hist-ok" and event.record.pinned
    finally:
        assert again.stop() == 0
