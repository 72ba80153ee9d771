"""Shared computations: waiters detach on cancel, the last one cancels the work."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from bkcore.solver.flight import Flight, gather_all


class Owner:
    """A task group standing in for the solver's."""

    def __init__(self, tg: asyncio.TaskGroup) -> None:
        self.tg = tg

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self.tg.create_task(coro)


class Work:
    def __init__(self, delay: float = 0.05, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.starts = 0
        self.cancelled = 0

    async def __call__(self, value: int) -> int:
        self.starts += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail:
            raise ValueError("bad")
        return value * 2


def test_one_run_for_many_waiters_and_memoized() -> None:
    async def main() -> None:
        work = Work()
        flight: Flight[int] = Flight()
        async with asyncio.TaskGroup() as tg:
            owner = Owner(tg)
            results = await asyncio.gather(*(flight.join(owner.spawn, work, 21) for _ in range(5)))
            assert results == [42] * 5
            assert await flight.join(owner.spawn, work, 0) == 42
        assert work.starts == 1 and flight.done()

    asyncio.run(main())


def test_cancelled_waiter_detaches_and_last_one_cancels_the_work() -> None:
    async def main() -> None:
        work = Work(delay=10)
        flight: Flight[int] = Flight()
        async with asyncio.TaskGroup() as tg:
            owner = Owner(tg)
            a = asyncio.ensure_future(flight.join(owner.spawn, work, 1))
            b = asyncio.ensure_future(flight.join(owner.spawn, work, 1))
            await asyncio.sleep(0.01)
            a.cancel()
            await asyncio.sleep(0.01)
            assert work.cancelled == 0 and flight.waiters == 1
            b.cancel()
            await asyncio.sleep(0.01)
            assert work.cancelled == 1
            # A later join starts afresh.
            work.delay = 0.01
            assert await flight.join(owner.spawn, work, 2) == 4
        assert work.starts == 2

    asyncio.run(main())


def test_errors_reach_every_waiter() -> None:
    async def main() -> None:
        work = Work(fail=True)
        flight: Flight[int] = Flight()
        async with asyncio.TaskGroup() as tg:
            owner = Owner(tg)
            outcomes = await asyncio.gather(
                flight.join(owner.spawn, work, 1),
                flight.join(owner.spawn, work, 1),
                return_exceptions=True,
            )
            assert all(isinstance(o, ValueError) for o in outcomes)
            with pytest.raises(ValueError):
                await flight.join(owner.spawn, work, 1)
        assert work.starts == 1

    asyncio.run(main())


def test_inline_run_restarts_in_a_task_when_its_runner_is_cancelled() -> None:
    async def main() -> None:
        work = Work(delay=0.05)
        flight: Flight[int] = Flight()
        async with asyncio.TaskGroup() as tg:
            owner = Owner(tg)
            runner = tg.create_task(flight.run_inline(owner.spawn, work, 5))
            await asyncio.sleep(0.01)
            other = asyncio.ensure_future(flight.join(owner.spawn, work, 5))
            await asyncio.sleep(0)
            runner.cancel()
            assert await other == 10
        assert work.starts == 2 and work.cancelled == 1

    asyncio.run(main())


def test_gather_all_first_error_cancels_the_rest() -> None:
    async def main() -> None:
        slow, bad = Work(delay=10), Work(delay=0.01, fail=True)
        flights: list[Flight[int]] = [Flight(), Flight()]
        async with asyncio.TaskGroup() as tg:
            owner = Owner(tg)
            joined = gather_all(
                [flights[0].join(owner.spawn, slow, 1), flights[1].join(owner.spawn, bad, 1)]
            )
            with pytest.raises(ValueError):
                await joined
            await asyncio.sleep(0.01)
        assert slow.cancelled == 1

    asyncio.run(main())


def test_gather_all_cancel_detaches_everything() -> None:
    async def main() -> None:
        works = [Work(delay=10), Work(delay=10)]
        flights: list[Flight[int]] = [Flight(), Flight()]
        async with asyncio.TaskGroup() as tg:
            owner = Owner(tg)
            joined = gather_all(
                [f.join(owner.spawn, w, 1) for f, w in zip(flights, works, strict=True)]
            )
            await asyncio.sleep(0.01)
            joined.cancel()
            await asyncio.sleep(0.01)
        assert [w.cancelled for w in works] == [1, 1]
        assert await gather_all([]) == []

    asyncio.run(main())
