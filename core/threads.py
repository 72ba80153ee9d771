"""Blocking calls in threads that a cancellation cannot abandon half-done.

A cancelled ``await asyncio.to_thread(...)`` returns at once while the thread keeps running;
these helpers wait for the thread before re-raising, so nothing (a mount, a commit) is left
behind the caller's back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import TypeVar

__all__ = ["entered_in_thread", "shielded_thread"]

_T = TypeVar("_T")


async def shielded_thread(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` in a thread; when cancelled, wait for it to finish, then re-raise."""
    task = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


@asynccontextmanager
async def entered_in_thread(cm: AbstractContextManager[_T]) -> AsyncIterator[_T]:
    """``with cm`` with ``__enter__`` and ``__exit__`` each run in a thread.

    A cancellation while entering waits for ``__enter__`` and, when it succeeded, leaves
    ``cm`` again before re-raising; leaving is never abandoned. ``__exit__`` is always called
    with no exception (an error in the block is not passed to ``cm``).
    """
    enter = asyncio.ensure_future(asyncio.to_thread(cm.__enter__))
    try:
        value = await asyncio.shield(enter)
    except asyncio.CancelledError:
        await asyncio.wait([enter])
        if not enter.cancelled() and enter.exception() is None:
            await asyncio.to_thread(cm.__exit__, None, None, None)
        raise
    try:
        yield value
    finally:
        await shielded_thread(lambda: cm.__exit__(None, None, None))
