"""Run sibling coroutines in one ``TaskGroup`` and raise the first real error unwrapped."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_together", "run_with"]

T = TypeVar("T")


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


async def run_together(*coros: Coroutine[Any, Any, Any]) -> list[Any]:
    """Run ``coros`` concurrently; when one fails the others are cancelled and the first
    failure is raised as itself (not as an ``ExceptionGroup``); results in order otherwise."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c) for c in coros]
    except BaseExceptionGroup as eg:
        raise _first(eg) from None
    return [t.result() for t in tasks]


async def run_with(main: Coroutine[Any, Any, T], background: Coroutine[Any, Any, Any]) -> T:
    """Run ``background`` while ``main`` runs; cancel it when ``main`` ends. Errors of either
    are raised unwrapped."""
    try:
        async with asyncio.TaskGroup() as tg:
            bg = tg.create_task(background)

            async def primary() -> T:
                try:
                    return await main
                finally:
                    bg.cancel()

            task = tg.create_task(primary())
    except BaseExceptionGroup as eg:
        raise _first(eg) from None
    return task.result()
