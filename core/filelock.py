"""An exclusive, cancellable cross-process file lock for state under the store root."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

POLL_SECONDS = 0.05


@asynccontextmanager
async def locked(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created with its parent directory if missing).

    Waiting polls, so it stays cancellable; the kernel drops the lock when its process dies.
    """

    def open_lock() -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    fd = await asyncio.to_thread(open_lock)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(POLL_SECONDS)
        yield
    finally:
        os.close(fd)
