"""Single-flight with waiter futures (Go ``flightcontrol`` semantics, asyncio style).

The first :meth:`Flight.join` starts the computation as a task owned by the solver's task
group; every caller gets its own *waiter* future for the outcome. Cancelling a waiter (which
is what happens when the task awaiting it is cancelled) only detaches that caller; when the
last waiter detaches before the outcome is known, the computation is cancelled (so an op's
process is killed only when nobody needs it any more) and the next join starts afresh.

:func:`gather_all` awaits several waiters without extra tasks: the first error cancels the
other waiters (detaching them) and is raised alone; cancelling it cancels them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]

__all__ = ["Flight", "Spawn", "gather_all"]


class Flight(Generic[T]):
    """One shared computation; see the module docstring."""

    __slots__ = ("_abandoned", "_done", "_error", "_gen", "_inline", "_task", "_value", "_waiters")

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._waiters: set[asyncio.Future[T]] | None = None
        self._done = False
        self._value: T | None = None
        self._error: BaseException | None = None
        self._gen = 0
        self._abandoned: list[asyncio.Task[None]] | None = None
        self._inline = False

    def done(self) -> bool:
        return self._done

    @property
    def waiters(self) -> int:
        return len(self._waiters) if self._waiters else 0

    def join(
        self, spawn: Spawn, factory: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> asyncio.Future[T]:
        """A new waiter future for the outcome, starting ``factory(*args)`` if needed."""
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self._done:
            if self._error is not None:
                waiter.set_exception(self._error)
            else:
                waiter.set_result(self._value)  # type: ignore[arg-type]
            return waiter
        if self._task is None and not self._inline:
            self._task = spawn(self._run(self._gen, factory, *args))
        if self._waiters is None:
            self._waiters = set()
        self._waiters.add(waiter)
        waiter.add_done_callback(self._detach)
        return waiter

    async def run_inline(
        self, spawn: Spawn, factory: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> T:
        """Compute in the calling task (itself a flight's task) instead of a new one.

        Saves a task and a wake-up on the hot path. Others may join meanwhile; if the calling
        task is cancelled while they still wait, the computation restarts in its own task.
        """
        if self._done:
            if self._error is not None:
                raise self._error
            return self._value  # type: ignore[return-value]
        if self._task is not None or self._inline:
            return await self.join(spawn, factory, *args)
        self._inline = True
        gen = self._gen
        try:
            value = await factory(*args)
        except asyncio.CancelledError:
            self._inline = False
            if gen == self._gen and self._waiters:
                self._task = spawn(self._run(gen, factory, *args))
            raise
        except Exception as exc:
            self._inline = False
            if gen == self._gen:
                self._finish(None, exc)
            raise
        self._inline = False
        if gen == self._gen:
            self._finish(value, None)
        return value

    async def _run(
        self, gen: int, factory: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> None:
        # The coroutine is made here, so a run cancelled before it starts leaves none behind.
        try:
            value = await factory(*args)
        except asyncio.CancelledError:
            if gen == self._gen:  # cancelled while waited for (solver shutdown, close)
                self._task = None
                for waiter in list(self._waiters or ()):
                    waiter.cancel()
            raise
        except Exception as exc:
            if gen == self._gen:
                self._finish(None, exc)
        else:
            if gen == self._gen:
                self._finish(value, None)

    def _finish(self, value: T | None, error: BaseException | None) -> None:
        self._done = True
        self._task = None
        self._value = value
        self._error = error
        waiters, self._waiters = self._waiters or (), None
        for waiter in waiters:
            waiter.remove_done_callback(self._detach)
            if waiter.done():
                continue
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(value)  # type: ignore[arg-type]

    def _detach(self, waiter: asyncio.Future[T]) -> None:
        if self._waiters is not None:
            self._waiters.discard(waiter)
        if self._waiters or self._done or self._task is None or self._inline:
            return
        task = self._task
        self._task = None
        self._gen += 1  # an abandoned run can no longer finish this flight
        task.cancel()
        self._abandoned = [t for t in self._abandoned or () if not t.done()]
        self._abandoned.append(task)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel what still runs (also abandoned runs); return the tasks to await."""
        tasks = [t for t in self._abandoned or () if not t.done()]
        self._abandoned = None
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            tasks.append(task)
        return tasks


def gather_all(futures: Sequence[asyncio.Future[T]]) -> asyncio.Future[list[T]]:
    """One future for all ``futures``: results in order, or the first error alone.

    On the first error (or when this future is cancelled) the remaining futures are
    cancelled, which detaches their callers from the shared computations.
    """
    loop = asyncio.get_running_loop()
    out: asyncio.Future[list[T]] = loop.create_future()
    if not futures:
        out.set_result([])
        return out
    pending = len(futures)

    def cancel_rest() -> None:
        for fut in futures:
            if not fut.done():
                fut.cancel()

    def on_child(fut: asyncio.Future[T]) -> None:
        nonlocal pending
        if fut.cancelled():
            if not out.done():
                out.cancel()
            return
        error = fut.exception()  # also marks it as seen
        if out.done():
            return
        if error is not None:
            out.set_exception(error)
            cancel_rest()
            return
        pending -= 1
        if pending == 0:
            out.set_result([f.result() for f in futures])

    def on_out(fut: asyncio.Future[list[T]]) -> None:
        if fut.cancelled():
            cancel_rest()

    for fut in futures:
        fut.add_done_callback(on_child)
    out.add_done_callback(on_out)
    return out
