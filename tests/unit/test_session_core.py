"""Session, SessionManager and the in-process transport."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import pytest

from bkcore.errors import SessionError
from bkcore.session import (
    CallError,
    ConnectedSession,
    Handler,
    Metadata,
    ServerStream,
    Session,
    SessionManager,
    Status,
    new_session_id,
)


class Echo:
    """Unary ``Upper`` echoes upper-cased text with a metadata value; ``Chat`` streams back
    each request until the caller half-closes, then sends a trailer message."""

    def __init__(self) -> None:
        self.seen_md: Metadata | None = None

    def handlers(self) -> Mapping[str, Handler]:
        return {
            "/test.Echo/Upper": Handler("unary", self.upper, str, str),
            "/test.Echo/Chat": Handler("stream", self.chat, str, str),
            "/test.Echo/Fail": Handler("stream", self.fail, str, str),
        }

    async def upper(self, request: str, md: Metadata) -> str:
        if request == "missing":
            raise CallError(Status.NOT_FOUND, "nothing here")
        if request == "boom":
            raise RuntimeError("exploded\nsecond line")
        return request.upper() + md.get("suffix")

    async def chat(self, stream: ServerStream) -> None:
        self.seen_md = stream.metadata
        while (msg := await stream.recv()) is not None:
            await stream.send(f"echo:{msg}")
        await stream.send("bye")

    async def fail(self, stream: ServerStream) -> None:
        await stream.send("first")
        raise CallError(Status.PERMISSION_DENIED, "go away")


def test_session_ids_and_headers() -> None:
    sid = new_session_id()
    assert len(sid) == 25 and sid.isalnum() and sid == sid.lower()
    with pytest.raises(SessionError):
        Session(id="a:b")
    s = Session(id="abc", name="proj")
    s.allow(Echo())
    headers = s.headers()
    assert ("x-docker-expose-session-uuid", "abc") in headers
    assert ("x-docker-expose-session-name", "proj") in headers
    # an empty shared key is omitted, methods are repeated
    assert not any(k == "x-docker-expose-session-sharedkey" for k, _ in headers)
    methods = [v for k, v in headers if k == "x-docker-expose-session-grpc-method"]
    assert methods == sorted(
        ["/grpc.health.v1.Health/Check", "/test.Echo/Upper", "/test.Echo/Chat", "/test.Echo/Fail"]
    )
    with pytest.raises(SessionError, match="already served"):
        s.allow(Echo())


def test_unary_calls_and_errors() -> None:
    s = Session()
    s.allow(Echo())
    caller = s.caller()
    assert caller.supports("/TEST.echo/upper")  # case-insensitive like the daemon
    assert not caller.supports("/test.Echo/Nope")

    async def main() -> None:
        assert await caller.call_unary("/test.Echo/Upper", "hi", str, {"Suffix": "!"}) == "HI!"
        with pytest.raises(CallError) as info:
            await caller.call_unary("/test.Echo/Upper", "missing", str)
        assert info.value.code is Status.NOT_FOUND
        with pytest.raises(CallError) as info:
            await caller.call_unary("/test.Echo/Upper", "boom", str)
        assert info.value.code is Status.UNKNOWN and str(info.value).endswith("exploded")
        with pytest.raises(CallError) as info:
            await caller.call_unary("/test.Echo/Nope", "x", str)
        assert info.value.code is Status.UNIMPLEMENTED

    asyncio.run(main())


def test_bidi_stream_with_metadata_and_half_close() -> None:
    echo = Echo()
    s = Session()
    s.allow(echo)

    async def main() -> list[str]:
        got = []
        md = [("k", "1"), ("K", "2")]
        async with s.caller().open_stream("/test.Echo/Chat", str, md) as stream:
            for word in ["a", "b", "c"]:
                await stream.send(word)
            await stream.end()
            while (msg := await stream.recv()) is not None:
                got.append(msg)
        return got

    assert asyncio.run(main()) == ["echo:a", "echo:b", "echo:c", "bye"]
    assert echo.seen_md is not None and echo.seen_md.get_all("k") == ["1", "2"]


def test_stream_handler_error_reaches_caller() -> None:
    s = Session()
    s.allow(Echo())

    async def main() -> None:
        async with s.caller().open_stream("/test.Echo/Fail", str) as stream:
            assert await stream.recv() == "first"
            with pytest.raises(CallError) as info:
                await stream.recv()
            assert info.value.code is Status.PERMISSION_DENIED

    asyncio.run(main())


def test_many_messages_flow_with_backpressure() -> None:
    s = Session()
    s.allow(Echo())

    async def main() -> int:
        count = 0
        async with s.caller().open_stream("/test.Echo/Chat", str) as stream:

            async def produce() -> None:
                for i in range(1000):
                    await stream.send(str(i))
                await stream.end()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(produce())
                while await stream.recv() is not None:
                    count += 1
        return count

    assert asyncio.run(main()) == 1001


def test_caller_error_inside_stream_cancels_handler() -> None:
    s = Session()
    s.allow(Echo())

    async def main() -> None:
        with pytest.raises(ValueError, match="client bug"):
            async with s.caller().open_stream("/test.Echo/Chat", str) as stream:
                await stream.send("x")
                raise ValueError("client bug")

    asyncio.run(main())


def test_manager_waits_for_late_session_and_groups() -> None:
    async def main() -> None:
        mgr = SessionManager()
        late = Session(id="late")
        late.allow(Echo())

        async def connect_later() -> None:
            await asyncio.sleep(0.05)
            mgr.attach(late)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(connect_later())
            conn = await mgr.get("prefix:late", timeout=2)
        assert conn.id == "late"
        with pytest.raises(SessionError, match="timed out"):
            await mgr.get("never", timeout=0.05)
        with pytest.raises(SessionError, match="already connected"):
            mgr.attach(late)

        # group lookup: the first session for which the call works wins
        plain = Session(id="plain")
        mgr.attach(plain)

        async def upper(c: ConnectedSession) -> str:
            return await c.caller.call_unary("/test.Echo/Upper", "x", str)

        assert await mgr.any(["gone", "plain", "late"], upper, timeout=0.01) == "X"
        with pytest.raises(CallError):
            await mgr.any(["plain"], upper, timeout=0.01)

        await mgr.close()
        assert conn.closed.is_set()
        with pytest.raises(SessionError, match="closed"):
            await mgr.get("late")

    asyncio.run(main())


def test_every_session_answers_health_checks() -> None:
    from bkcore.session.health import HealthCheckRequest, HealthCheckResponse

    caller = Session().caller()
    resp = asyncio.run(
        caller.call_unary("/grpc.health.v1.Health/Check", HealthCheckRequest(), HealthCheckResponse)
    )
    assert resp.status == 1  # SERVING


def test_manager_close_ends_every_transport() -> None:
    closed: list[str] = []

    async def main() -> None:
        mgr = SessionManager()

        def closer(name: str, fail: bool = False) -> Callable[[], Awaitable[None]]:
            async def close() -> None:
                closed.append(name)
                if fail:
                    raise OSError("socket already gone")

            return close

        mgr.register("a", "", "", Session().caller(), on_close=closer("a", fail=True))
        mgr.register("b", "", "", Session().caller(), on_close=closer("b"))
        with pytest.raises(SessionError, match="socket already gone"):
            await mgr.close()

    asyncio.run(main())
    assert closed == ["a", "b"]
