"""Single-flight with waiter counting (Go ``flightcontrol`` semantics, asyncio style).

The first caller starts the computation as a task owned by the solver's task group; later
callers wait for the same outcome. A waiter that is cancelled only detaches; when the last
waiter detaches before the outcome is known, the task is cancelled (so an op's process is
killed only when nobody needs it any more) and the next caller starts afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]

__all__ = ["Flight", "Spawn"]


async def _run_into(coro: Coroutine[Any, Any, T], fut: asyncio.Future[T]) -> None:
    """Run ``coro`` and hand its outcome to ``fut``; never raises anything but cancellation."""
    try:
        value = await coro
    except asyncio.CancelledError:
        fut.cancel()
        raise
    except Exception as exc:
        if not fut.done():
            fut.set_exception(exc)
    else:
        if not fut.done():
            fut.set_result(value)


class Flight(Generic[T]):
    """One shared computation; see the module docstring."""

    __slots__ = ("_abandoned", "_fut", "_task", "_waiters")

    def __init__(self) -> None:
        self._fut: asyncio.Future[T] | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters = 0
        self._abandoned: list[asyncio.Task[None]] = []

    @property
    def waiters(self) -> int:
        return self._waiters

    def done(self) -> bool:
        fut = self._fut
        return fut is not None and fut.done() and not fut.cancelled()

    async def get(self, spawn: Spawn, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        fut = self._fut
        if fut is not None and fut.done():
            if not fut.cancelled():
                return fut.result()
            fut = None
        if fut is None:
            fut = self._fut = asyncio.get_running_loop().create_future()
            self._task = spawn(_run_into(factory(), fut))
        self._waiters += 1
        try:
            return await asyncio.shield(fut)
        finally:
            self._waiters -= 1
            if self._waiters == 0 and not fut.done() and self._fut is fut:
                task = self._task
                self._fut = None
                self._task = None
                if task is not None:
                    task.cancel()
                    self._abandoned = [t for t in self._abandoned if not t.done()]
                    self._abandoned.append(task)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel what still runs (also abandoned computations); return the tasks to await."""
        fut = self._fut
        if fut is not None and fut.done() and not fut.cancelled():
            fut.exception()  # mark a stored error as seen even if nobody waits any more
        tasks = [t for t in self._abandoned if not t.done()]
        self._abandoned = []
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            tasks.append(task)
        return tasks
