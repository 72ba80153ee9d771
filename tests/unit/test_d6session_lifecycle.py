"""The Control.Session tunnel's life: headers read by the daemon, refused sessions, health
checks, a client that disappears, the daemon closing sessions, cancelled calls. Every test
ends with no asyncio task left behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.server import Server

from bkcore.api.codec import GoCodec
from bkcore.errors import SessionError
from bkcore.session import CallError, Handler, Metadata, ServerStream, Session, SessionManager
from bkcore.session import Status as S
from bkcore.session.filesync import DIFFCOPY, sync_dir
from bkcore.session.filesync.packets import Packet
from bkcore.session.grpc_transport import (
    SessionService,
    TunnelCaller,
    attach_session,
    health_loop,
)
from bkcore.session.health import HEALTH_CHECK, HealthCheckRequest, HealthCheckResponse
from bkcore.sessions.filesync import FileSyncProvider


async def check(caller: Any) -> HealthCheckResponse:
    r: HealthCheckResponse = await caller.call_unary(
        HEALTH_CHECK, HealthCheckRequest(), HealthCheckResponse
    )
    return r


class Daemon:
    def __init__(self, manager: SessionManager, path: str) -> None:
        self.manager = manager
        self.path = path

    def channel(self) -> Channel:
        return Channel(path=self.path, codec=GoCodec())


@asynccontextmanager
async def daemon(health_interval: float = 5.0) -> AsyncIterator[Daemon]:
    sockdir = tempfile.mkdtemp(prefix="d6l", dir="/tmp")
    manager = SessionManager()
    server = Server([SessionService(manager, health_interval=health_interval)], codec=GoCodec())
    await server.start(path=os.path.join(sockdir, "s"))
    try:
        yield Daemon(manager, os.path.join(sockdir, "s"))
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(sockdir)


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    async def wrapped() -> Any:
        result = await main()
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert left == []
        return result

    return asyncio.run(wrapped())


class Blocker:
    """A FileSync client whose DiffCopy never answers (records that it was cancelled)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    def handlers(self) -> Mapping[str, Handler]:
        return {DIFFCOPY: Handler("stream", self.run, Packet, Packet)}

    async def run(self, stream: ServerStream) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def test_daemon_reads_the_session_headers() -> None:
    async def main() -> None:
        async with daemon() as d:
            s = Session(name="proj", shared_key="key1")
            s.allow(FileSyncProvider({"ctx": "/nonexistent"}))
            ch = d.channel()
            async with attach_session(ch, s):
                conn = await d.manager.get(s.id)
                assert (conn.name, conn.shared_key) == ("proj", "key1")
                assert isinstance(conn.caller, TunnelCaller)
                # exactly the advertised methods, case-insensitively
                assert conn.caller.supports("/moby.FILESYNC.v1.FileSync/DiffCopy")
                assert conn.caller.supports(HEALTH_CHECK)
                assert not conn.caller.supports("/moby.filesync.v1.FileSend/DiffCopy")
                r = await conn.caller.call_unary(
                    HEALTH_CHECK, HealthCheckRequest(), HealthCheckResponse
                )
                assert r.status == 1  # SERVING
            assert d.manager.ids() == [] and conn.closed.is_set()
            ch.close()

    run(main)


def test_invalid_and_duplicate_sessions_are_refused() -> None:
    async def main() -> None:
        async with daemon() as d:
            ch = d.channel()
            bad = Session()
            bad.headers = lambda: [("x-docker-expose-session-name", "x")]  # type: ignore[method-assign]
            with pytest.raises(SessionError, match="x-docker-expose-session-uuid"):
                async with attach_session(ch, bad) as serving:
                    await asyncio.wait([serving])
            first = Session(id="samesessionid")
            async with attach_session(ch, first):
                await d.manager.get(first.id)
                with pytest.raises(SessionError, match="already connected"):
                    async with attach_session(ch, Session(id="samesessionid")) as serving:
                        await asyncio.wait([serving])
                # the first one is still served
                conn = await d.manager.get(first.id)
                await conn.caller.call_unary(
                    HEALTH_CHECK, HealthCheckRequest(), HealthCheckResponse
                )
            ch.close()

    run(main)


def test_client_that_disappears_releases_its_session() -> None:
    async def main() -> None:
        async with daemon() as d:
            blocker = Blocker()
            s = Session()
            s.allow(blocker)
            ch = d.channel()
            cm = attach_session(ch, s)
            serving = await cm.__aenter__()
            conn = await d.manager.get(s.id)
            sync = asyncio.ensure_future(sync_dir(conn.caller, "ctx", "/nonexistent/dst"))
            await blocker.started.wait()
            # the client process "dies": its connection drops without a half-close
            ch.close()
            await conn.closed.wait()  # the daemon unregistered the session
            assert d.manager.ids() == []
            with pytest.raises(SessionError):  # the pending call fails instead of hanging
                await sync
            # later calls fail at once
            with pytest.raises(CallError) as info:
                await conn.caller.call_unary(
                    HEALTH_CHECK, HealthCheckRequest(), HealthCheckResponse
                )
            assert info.value.code is S.UNAVAILABLE
            with pytest.raises(SessionError, match=s.id):  # the client learns it too
                await cm.__aexit__(None, None, None)
            assert serving.done()

    run(main)


def test_manager_close_ends_the_client_stream() -> None:
    async def main() -> None:
        async with daemon() as d:
            s = Session()
            ch = d.channel()
            async with attach_session(ch, s) as serving:
                conn = await d.manager.get(s.id)
                await d.manager.close()
                assert conn.closed.is_set()
                await serving  # the daemon ended the stream: the client stops serving
            ch.close()

    run(main)


def test_cancelled_call_cancels_the_client_handler_and_session_lives_on() -> None:
    async def main() -> None:
        async with daemon() as d:
            blocker = Blocker()
            s = Session()
            s.allow(blocker)
            ch = d.channel()
            async with attach_session(ch, s):
                conn = await d.manager.get(s.id)
                sync = asyncio.ensure_future(sync_dir(conn.caller, "ctx", "/nonexistent/dst"))
                await blocker.started.wait()
                sync.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await sync
                await blocker.cancelled.wait()  # the RST reached the client's handler
                r = await conn.caller.call_unary(
                    HEALTH_CHECK, HealthCheckRequest(), HealthCheckResponse
                )
                assert r.status == 1
            ch.close()

    run(main)


def test_failing_health_checks_tear_the_session_down() -> None:
    async def main() -> None:
        async with daemon(health_interval=0.01) as d:
            s = Session()
            calls = []

            async def unhealthy(req: HealthCheckRequest, md: Metadata) -> HealthCheckResponse:
                calls.append(req)
                raise CallError(S.UNAVAILABLE, "sick")

            s._handlers[HEALTH_CHECK] = Handler(
                "unary", unhealthy, HealthCheckRequest, HealthCheckResponse
            )
            ch = d.channel()
            async with attach_session(ch, s) as serving:
                conn = await d.manager.get(s.id)
                await conn.closed.wait()
                await serving
            assert len(calls) == 2  # two failures in a row
            ch.close()

    run(main)


class FakeHealth:
    """Answers Health/Check from a script of outcomes; stops the loop when it runs out."""

    def __init__(self, script: str) -> None:
        self.script = list(script)
        self.calls = 0

    async def call_unary(self, method: str, req: Any, rtype: type[Any], md: Any = ()) -> Any:
        assert method == HEALTH_CHECK
        self.calls += 1
        if not self.script:
            raise LookupError("script over")
        if self.script.pop(0) == "x":
            raise CallError(S.UNAVAILABLE, "down")
        return HealthCheckResponse(status=1)


@pytest.mark.parametrize(
    ("script", "calls"),
    [
        ("xx", 2),  # two consecutive failures: torn down
        ("x.x", 3),  # one success between is not enough
        ("x....x", 6),
        ("x.....x", None),  # five successes clear the earlier failure: still alive
        ("......", None),
    ],
)
def test_health_loop_policy(script: str, calls: int | None) -> None:
    fake = FakeHealth(script)

    async def main() -> None:
        await health_loop(fake, interval=0)

    if calls is None:
        with pytest.raises(LookupError):
            asyncio.run(main())
    else:
        asyncio.run(main())
        assert fake.calls == calls
