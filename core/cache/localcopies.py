"""Persistent copies of client directories (the ``local://`` source's synced trees).

Layout under the store root (shared by the source that fills the copies and by the store that
lists and prunes them)::

    local/<id>/tree             the synced copy of one NAME:hint:shared-key directory
    local/<id>/index.json       the sync's content index
    local/<id>/lock             flock'ed while a sync and commit run; holds the description
    local/<id>/last-snapshot    the snapshot last committed from the copy
    local/<id>/uses             how many times the copy was locked for a sync (du's UsageCount)
    local/content/<identity>    tree identity -> snapshot id (shared by every copy)

Lock protocol: a user holds an exclusive ``flock`` on ``lock`` (:func:`lock_copy`), which
also writes the copy's description into the file (so its mtime is the last use). A prune
takes the same lock without waiting, renames the copy away (so a process already waiting on
the old lock file notices, by inode, that it locked a removed copy and starts over) and only
then deletes it. ``bkcore du`` lists the copies as ``source.local`` records.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from bkcore.cache import fsutil

__all__ = [
    "CONTENT_DIR",
    "INDEX",
    "LOCAL_DIR",
    "LocalCopies",
    "LocalCopyInfo",
    "copy_dir_for",
    "lock_copy",
]

#: Directory under the store root holding the copies and the content map.
LOCAL_DIR = "local"
CONTENT_DIR = "content"
INDEX = "index.json"
LOCK = "lock"
USES = "uses"
_TRASH = ".trash-"
_COPY_NAME = re.compile(r"[0-9a-f]{32}")
_POLL = 0.05
_MAX_DESCRIPTION = 4096


def copy_dir_for(store_root: Path, name: str, hint: str, shared_key: str) -> Path:
    """The persistent copy of ``NAME:hint:shared_key`` (its ``tree`` and sync index)."""
    ident = hashlib.sha256(f"{name}:{hint}:{shared_key}".encode()).hexdigest()[:32]
    return store_root / LOCAL_DIR / ident


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _try_lock(base: Path, description: bytes) -> int | None:
    """One attempt: the locked fd of ``base/lock`` (the copy created if needed), or None."""
    while True:
        try:
            base.mkdir(parents=True, exist_ok=True)
            fd = os.open(base / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            continue  # a prune renamed the copy away between mkdir and open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            if not _same_file(fd, base / LOCK):
                os.close(fd)  # locked a copy that a prune has removed since: start over
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, description, 0)  # also marks the copy used now (mtime)
            _count_use(base)
        except BaseException:
            os.close(fd)
            raise
        return fd


def _uses(base: Path) -> int:
    try:
        return int((base / USES).read_text() or "0")
    except (FileNotFoundError, ValueError):
        return 0


def _count_use(base: Path) -> None:
    """One more use of the copy (called with its lock held): temp file + rename."""
    tmp = base / f"{USES}.tmp"
    tmp.write_text(str(_uses(base) + 1))
    os.replace(tmp, base / USES)


def _close_got(fut: asyncio.Future[int | None]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fd = fut.result()
        if fd is not None:
            os.close(fd)


@contextlib.asynccontextmanager
async def lock_copy(base: Path, description: str = "") -> AsyncIterator[None]:
    """Hold the copy ``base`` exclusively while the block runs (created when missing).

    Waiting polls, so it stays cancellable; a prune never removes a copy held here.
    """
    data = description.encode()[:_MAX_DESCRIPTION]
    loop = asyncio.get_running_loop()
    while True:
        fut = loop.run_in_executor(None, _try_lock, base, data)
        try:
            fd = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(_close_got)  # the thread may still take the lock
            raise
        if fd is not None:
            break
        await asyncio.sleep(_POLL)
    try:
        yield
    finally:
        os.close(fd)  # releases the flock


@dataclass(frozen=True, slots=True)
class LocalCopyInfo:
    """One copy as ``du`` shows it."""

    name: str  # the copy's directory name under ``local/``
    path: Path
    size: int
    in_use: bool
    last_used: float
    description: str
    usage_count: int = 0  #: syncs that used the copy (BuildKit's UsageCount)


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _size(path: Path) -> int:
    for _ in range(3):
        try:
            return fsutil.disk_usage(path)
        except OSError:
            continue  # an entry vanished under the walk (a sync is running): measure again
    return 0


class LocalCopies:
    """The copies under ``root/local``: list, test and remove (blocking calls)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / LOCAL_DIR

    def names(self) -> list[str]:
        """Directory names of the copies present (sorted)."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if _COPY_NAME.fullmatch(e.name) and e.is_dir())

    def lock_path(self, name: str) -> Path:
        """The lock file of the copy ``name`` (a name from :meth:`names`)."""
        if not _COPY_NAME.fullmatch(name):
            raise ValueError(f"not a local copy name: {name!r}")
        return self.dir / name / LOCK

    def in_use(self, name: str) -> bool:
        """True while a sync holds the copy's lock."""
        try:
            fd = os.open(self.lock_path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def info(self, name: str) -> LocalCopyInfo:
        base = self.dir / name
        lock = self.lock_path(name)
        try:
            with open(lock, "rb") as f:
                description = f.read(_MAX_DESCRIPTION).decode(errors="replace")
        except FileNotFoundError:
            description = ""
        return LocalCopyInfo(
            name=name,
            path=base,
            size=_size(base),
            in_use=self.in_use(name),
            last_used=max(_mtime(lock), _mtime(base / INDEX)),
            description=description or "local source",
            usage_count=_uses(base),
        )

    def all(self) -> list[LocalCopyInfo]:
        return [self.info(n) for n in self.names()]

    def remove(self, name: str) -> int:
        """Remove the copy ``name`` unless it is in use; returns the bytes freed (0 if busy)."""
        base = self.dir / name
        try:
            fd = os.open(self.lock_path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            return 0  # gone already
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            if not _same_file(fd, base / LOCK):
                return 0  # removed by someone else meanwhile
            size = _size(base)
            trash = self.dir / f"{_TRASH}{name}-{uuid.uuid4().hex[:12]}"
            os.rename(base, trash)
        finally:
            os.close(fd)
        fsutil.remove(trash)
        return size

    def drop_stale_content(self, exists: Callable[[str], bool]) -> int:
        """Forget content-map entries whose snapshot is gone; returns how many went."""
        content = self.dir / CONTENT_DIR
        try:
            entries = list(os.scandir(content))
        except FileNotFoundError:
            return 0
        dropped = 0
        for e in entries:
            if e.name.startswith("."):
                continue  # a map entry being written
            try:
                target = Path(e.path).read_text().strip()
            except OSError:
                continue
            if target and exists(target):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)
                dropped += 1
        return dropped

    def recover(self) -> None:
        """Finish removals a crashed prune left half done."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for e in entries:
            if e.name.startswith(_TRASH):
                with contextlib.suppress(OSError):
                    fsutil.remove(e.path)
