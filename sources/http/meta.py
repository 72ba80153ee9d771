"""What is remembered about a URL between builds: ETag, Last-Modified, digest, snapshot.

One small JSON file per URL (and filename/perm/owner attrs) under
``<store root>/http-sources/``, holding the most recent downloads first. The next build sends
their ETags in ``If-None-Match`` (or the newest ``Last-Modified`` in ``If-Modified-Since`` when
the server gave no ETag); a ``304`` names which download is still current, so the key is
known without downloading again. An entry is only a hint: its snapshot may have been pruned
since, then the file is downloaded again and checked against the remembered digest.
Read-modify-write happens under a ``flock`` per file.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from bkcore.filelock import locked

__all__ = ["HTTP_DIR", "MAX_ENTRIES", "Entry", "load", "remember"]

HTTP_DIR = "http-sources"
LOCKS_DIR = "http-sources.locks"
#: Downloads remembered per URL (each one an ETag the server may still answer 304 to).
MAX_ENTRIES = 8


@dataclass(frozen=True, slots=True)
class Entry:
    """One download of a URL: its validators, content digest, file name and snapshot."""

    etag: str
    last_modified: str
    checksum: str
    filename: str
    snapshot: str


def _path(root: Path, url_hash: str) -> Path:
    return root / HTTP_DIR / f"{url_hash}.json"


def load(root: Path, url_hash: str) -> list[Entry]:
    """The remembered downloads of ``url_hash``, newest first (none when unreadable)."""
    try:
        raw = json.loads(_path(root, url_hash).read_text())
    except (OSError, ValueError):
        return []
    out: list[Entry] = []
    if isinstance(raw, list):
        for item in raw:
            try:
                out.append(Entry(**{k: str(item[k]) for k in Entry.__slots__}))
            except (KeyError, TypeError):
                continue
    return out


def _write(root: Path, url_hash: str, entries: list[Entry]) -> None:
    path = _path(root, url_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    tmp.write_text(json.dumps([asdict(e) for e in entries], indent=1))
    os.replace(tmp, path)


async def remember(root: Path, url_hash: str, entry: Entry) -> None:
    """Put ``entry`` first, dropping older entries with its ETag (or, without one, its
    Last-Modified) and keeping :data:`MAX_ENTRIES`."""
    async with locked(root / LOCKS_DIR / url_hash):
        entries = await asyncio.to_thread(load, root, url_hash)
        if entry.etag:
            kept = [e for e in entries if e.etag != entry.etag]
        else:
            kept = [e for e in entries if e.etag or e.last_modified != entry.last_modified]
        await asyncio.to_thread(_write, root, url_hash, [entry, *kept][:MAX_ENTRIES])
