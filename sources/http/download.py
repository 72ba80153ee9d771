"""Writing one HTTP response body into a new snapshot, hashed while it streams.

The file is created in a fresh mutable snapshot (``O_EXCL|O_NOFOLLOW`` inside its root), the
body is written in batches from a thread while the digest is updated (hashlib, C), then the
mode (``http.perm``, default 0600), owner (``http.uid``/``http.gid``) and mtime (the
response's ``Last-Modified``, else the epoch, as BuildKit) are set. When an expected digest is
given and the body does not match it, the snapshot is discarded: nothing is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from bkcore.cache.results import SnapshotResult, commit_result, prepare
from bkcore.errors import SourceError
from bkcore.sources.http.spec import HTTPSpec, file_name

if TYPE_CHECKING:
    import httpx

    from bkcore.cache.store import CacheStore
    from bkcore.progress import SharedProgress

__all__ = ["Saved", "etag_value", "mtime_of", "save"]

#: Bytes gathered before one write+hash in a worker thread.
_WRITE_BATCH = 1 << 20
_PROGRESS_INTERVAL = 0.1


@dataclass(slots=True)
class Saved:
    """A committed download: the snapshot reference and what describes it."""

    result: SnapshotResult
    digest: str
    filename: str
    etag: str
    last_modified: str


def etag_value(header: str | None) -> str:
    """An ETag without its weak ``W/`` prefix (compared directly, as BuildKit does)."""
    return (header or "").removeprefix("W/")


def mtime_of(last_modified: str) -> int:
    """Nanoseconds since the epoch of a ``Last-Modified`` value; 0 when absent or invalid."""
    if not last_modified:
        return 0
    try:
        when = parsedate_to_datetime(last_modified)
    except (TypeError, ValueError, IndexError):
        return 0
    return int(when.timestamp()) * 1_000_000_000


def _create(root: Path, name: str) -> BinaryIO:
    fd = os.open(
        root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    return os.fdopen(fd, "wb")


def _finish(out: BinaryIO, spec: HTTPSpec, mtime_ns: int) -> None:
    fd = out.fileno()
    os.fchmod(fd, spec.mode)
    if spec.uid or spec.gid:
        os.fchown(fd, spec.uid, spec.gid)
    out.flush()
    os.utime(fd, ns=(mtime_ns, mtime_ns))


async def save(
    store: CacheStore,
    spec: HTTPSpec,
    resp: httpx.Response,
    progress: SharedProgress,
    expected: str = "",
) -> Saved:
    """Stream ``resp`` (a 2xx response) into a new committed snapshot holding one file.

    ``expected`` (``algo:hex``) is checked before the commit; a mismatch raises
    :class:`SourceError` and leaves nothing behind.
    """
    name = file_name(spec, resp.headers.get("content-disposition"))
    last_modified = resp.headers.get("last-modified", "")
    algorithm = expected.split(":", 1)[0] if expected else "sha256"
    hasher = hashlib.new(algorithm)
    total_header = resp.headers.get("content-length", "")
    encoded = resp.headers.get("content-encoding", "identity") != "identity"
    total = int(total_header) if total_header.isdigit() and not encoded else 0
    status = f"downloading {spec.label}"
    started = time.time()
    mutable = await prepare(store, None, f"http url {spec.label}")
    try:
        root = await asyncio.to_thread(mutable.mount)
        out = await asyncio.to_thread(_create, root, name)
        written = 0
        try:

            def flush(batch: bytes) -> None:
                hasher.update(batch)
                out.write(batch)

            pending: list[bytes] = []
            pending_len = 0
            last_report = 0.0
            progress.status(status, current=0, total=total, started=started)
            async for chunk in resp.aiter_bytes():
                written += len(chunk)
                pending.append(chunk)
                pending_len += len(chunk)
                if pending_len >= _WRITE_BATCH:
                    await asyncio.to_thread(flush, b"".join(pending))
                    pending, pending_len = [], 0
                    now = time.monotonic()
                    if now - last_report >= _PROGRESS_INTERVAL:
                        last_report = now
                        progress.status(status, current=written, total=total, started=started)
            if pending:
                await asyncio.to_thread(flush, b"".join(pending))
            await asyncio.to_thread(_finish, out, spec, mtime_of(last_modified))
        finally:
            await asyncio.to_thread(out.close)
        digest = f"{algorithm}:{hasher.hexdigest()}"
        if expected and digest != expected:
            raise SourceError(f"{spec.label}: digest mismatch: expected {expected}, got {digest}")
    except BaseException:
        await asyncio.shield(asyncio.to_thread(mutable.discard))
        raise
    result = await commit_result(store, mutable)
    progress.status(status, current=written, total=total, started=started, completed=time.time())
    return Saved(result, digest, name, etag_value(resp.headers.get("etag")), last_modified)
