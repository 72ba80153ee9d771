"""Cache mounts (``RUN --mount=type=cache``): persistent directories found by id.

Each directory has a row in ``cache_mounts`` and a lock file beside it; users hold an
``fcntl.flock`` on that file, which works between processes and between tasks of one process
(every acquire opens its own file description). Sharing modes (solver.md §5):

* ``shared``: every concurrent user gets the same directory;
* ``private``: an idle directory of the id, or a new one when all are busy;
* ``locked``: the id's directory, waiting (asynchronously) until no one else holds it.

Cache mount contents are never part of a result or a cache key.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bkcore.cache import fsutil
from bkcore.cache.db import Database
from bkcore.errors import CacheError

Sharing = Literal["shared", "private", "locked"]
_POLL = 0.02


@dataclass(frozen=True, slots=True)
class CacheMountInfo:
    num: int
    id: str
    path: Path
    created_at: float
    last_used: float
    usage_count: int = 0  #: acquisitions so far (BuildKit's UsageCount)


class CacheMounts:
    """Cache mount directories under ``root/cachemounts/<n>/data``."""

    def __init__(self, root: Path, db: Database) -> None:
        self.dir = root / "cachemounts"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = db

    def _data(self, num: int) -> Path:
        return self.dir / str(num) / "data"

    def _open_lock(self, num: int) -> int:
        d = self.dir / str(num)
        d.mkdir(exist_ok=True)
        (d / "data").mkdir(exist_ok=True)
        return os.open(d / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _nums(self, cache_id: str) -> list[int]:
        rows = self.db.query("SELECT num FROM cache_mounts WHERE id=? ORDER BY num", (cache_id,))
        return [int(r[0]) for r in rows]

    def _new(self, cache_id: str, only_if_none: bool) -> int:
        now = time.time()
        with self.db.tx() as c:
            if only_if_none:
                row = c.execute(
                    "SELECT num FROM cache_mounts WHERE id=? ORDER BY num LIMIT 1", (cache_id,)
                ).fetchone()
                if row is not None:
                    return int(row[0])
            cur = c.execute(
                "INSERT INTO cache_mounts(id, created_at, last_used) VALUES (?,?,?)",
                (cache_id, now, now),
            )
            assert cur.lastrowid is not None
            return int(cur.lastrowid)

    @staticmethod
    def _try(fd: int, op: int) -> bool:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _grab(self, cache_id: str, sharing: Sharing) -> tuple[int, int] | None:
        """Try once to get a directory: (num, locked fd) or None to wait and retry."""
        if sharing == "locked":
            num = self._new(cache_id, only_if_none=True)
            fd = self._open_lock(num)
            if self._try(fd, fcntl.LOCK_EX):
                return num, fd
            os.close(fd)
            return None
        op = fcntl.LOCK_SH if sharing == "shared" else fcntl.LOCK_EX
        nums = self._nums(cache_id)
        for num in nums:
            fd = self._open_lock(num)
            if self._try(fd, op):
                return num, fd
            os.close(fd)
        # With no directory yet, two first users racing here must get the same one (the
        # check and the insert are one transaction); a new one only when all are busy.
        num = self._new(cache_id, only_if_none=not nums)
        fd = self._open_lock(num)
        if self._try(fd, op):
            return num, fd
        os.close(fd)
        return None

    @asynccontextmanager
    async def acquire(self, cache_id: str, sharing: Sharing = "shared") -> AsyncIterator[Path]:
        """The host directory for ``cache_id`` while the block runs."""
        if sharing not in ("shared", "private", "locked"):
            raise CacheError(f"unknown cache mount sharing mode {sharing!r}")
        loop = asyncio.get_running_loop()
        while True:
            fut = loop.run_in_executor(None, self._grab, cache_id, sharing)
            try:
                got = await asyncio.shield(fut)
            except asyncio.CancelledError:
                # The thread may still take the lock: release it when it is done.
                fut.add_done_callback(_close_lock)
                raise
            if got is not None:
                break
            await asyncio.sleep(_POLL)
        num, fd = got
        try:
            with self.db.tx() as c:
                c.execute(
                    "UPDATE cache_mounts SET last_used=?, usage_count=usage_count+1 WHERE num=?",
                    (time.time(), num),
                )
            yield self._data(num)
        finally:
            os.close(fd)  # releases the flock

    def drop(self, cache_id: str) -> None:
        """Forget ``cache_id`` (``--no-cache``): the next acquire starts from an empty dir.

        Directories in use stay until their users finish; recovery or prune removes them.
        """
        with self.db.tx() as c:
            nums = [
                int(r[0]) for r in c.execute("SELECT num FROM cache_mounts WHERE id=?", (cache_id,))
            ]
            c.execute("DELETE FROM cache_mounts WHERE id=?", (cache_id,))
        for num in nums:
            self._remove_if_idle(num)

    def _remove_if_idle(self, num: int) -> bool:
        d = self.dir / str(num)
        if not d.exists():
            return True
        fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not self._try(fd, fcntl.LOCK_EX):
                return False
            fsutil.remove(d / "data")
            fsutil.remove(d)
            return True
        finally:
            os.close(fd)

    def in_use(self, num: int) -> bool:
        d = self.dir / str(num)
        if not d.exists():
            return False
        fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            return not self._try(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)

    def all(self) -> list[CacheMountInfo]:
        rows = self.db.query("SELECT * FROM cache_mounts ORDER BY num")
        return [
            CacheMountInfo(
                int(r["num"]),
                r["id"],
                self._data(int(r["num"])),
                r["created_at"],
                r["last_used"],
                int(r["usage_count"]),
            )
            for r in rows
        ]

    def remove(self, num: int) -> int:
        """Remove the idle directory ``num`` and its row; returns bytes freed (0 if busy)."""
        d = self.dir / str(num)
        size = fsutil.disk_usage(d)
        fd = self._open_lock(num)
        try:
            if not self._try(fd, fcntl.LOCK_EX):
                return 0
            with self.db.tx() as c:
                c.execute("DELETE FROM cache_mounts WHERE num=?", (num,))
            fsutil.remove(d)
            return size
        finally:
            os.close(fd)

    def recover(self) -> None:
        """Remove idle directories that have no row (dropped while in use, or half-made)."""
        on_disk = [e.name for e in os.scandir(self.dir) if e.name.isdigit()]
        known = {str(r[0]) for r in self.db.query("SELECT num FROM cache_mounts")}
        for name in on_disk:
            if name not in known:
                self._remove_if_idle(int(name))


def _close_lock(fut: asyncio.Future[tuple[int, int] | None]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        got = fut.result()
        if got is not None:
            os.close(got[1])
