"""FileSync: the client serves local directories, the daemon syncs them (session.md §5)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bkcore.errors import SessionError
from bkcore.session.transport import Caller, CallError, Handler, ServerStream, Status
from bkcore.sessions.filesync.packets import Packet
from bkcore.sessions.filesync.receiver import HEADER_TOKENS, SyncResult, receive_diffcopy
from bkcore.sessions.filesync.sender import send_diffcopy
from bkcore.sessions.filesync.walker import walk

__all__ = ["DIFFCOPY", "FileSyncProvider", "SyncedDir", "default_index_path", "sync_dir"]

DIFFCOPY = "/moby.filesync.v1.FileSync/DiffCopy"


@dataclass(frozen=True)
class SyncedDir:
    """A directory the client shares; ``excludes`` are the client's own (e.g. .dockerignore)."""

    dir: str
    excludes: tuple[str, ...] = ()


class FileSyncProvider:
    """Client-side attachable serving ``FileSync.DiffCopy`` for named directories."""

    def __init__(self, dirs: Mapping[str, str | SyncedDir]) -> None:
        self._dirs = {
            name: d if isinstance(d, SyncedDir) else SyncedDir(os.path.abspath(d))
            for name, d in dirs.items()
        }

    def handlers(self) -> Mapping[str, Handler]:
        return {DIFFCOPY: Handler("stream", self._diffcopy, Packet, Packet)}

    async def _diffcopy(self, stream: ServerStream) -> None:
        md = stream.metadata
        name = md.get("dir-name")
        synced = self._dirs.get(name)
        if synced is None:
            raise CallError(Status.NOT_FOUND, f'no access allowed to dir "{name}"')
        excludes = list(md.get_all("exclude-patterns"))
        if md.get("override-excludes") != "true":
            excludes = [*synced.excludes, *excludes]
        entries = await asyncio.to_thread(
            walk,
            synced.dir,
            md.get_all("include-patterns"),
            excludes,
            md.get_all("followpaths"),
            tokens=md.get(HEADER_TOKENS) == "1",
            walk_start_ns=time.time_ns(),
        )
        await send_diffcopy(stream, entries)


# Syncs into one destination are serialised within this process (a second sync would race the
# first one's writes and index). Locks are small and few (one per local-source directory).
_DEST_LOCKS: dict[str, asyncio.Lock] = {}


def default_index_path(dest_dir: str) -> str:
    """The content index beside ``dest_dir`` (never inside the synced tree)."""
    return os.path.abspath(dest_dir).rstrip("/") + ".bkindex.json"


async def sync_dir(
    caller: Caller,
    name: str,
    dest_dir: str,
    includes: Sequence[str] = (),
    excludes: Sequence[str] = (),
    follow_paths: Sequence[str] = (),
    *,
    index_path: str | None = None,
    differ: Literal["metadata", "none"] = "metadata",
    apply_owner: bool | None = None,
) -> SyncResult:
    """Bring ``dest_dir`` up to date with the client's directory ``name``, incrementally.

    Only changed files are transferred, entries gone on the client are deleted, and unlike
    BuildKit a content change that keeps size and mtime is detected (see :mod:`.receiver`).
    ``index_path`` defaults to :func:`default_index_path`. Owners from the client (0/0) are
    applied when running as root unless ``apply_owner`` says otherwise. Concurrent syncs
    into the same ``dest_dir`` in this process run one after the other.
    """
    if not caller.supports(DIFFCOPY):
        raise SessionError("no local sources enabled")
    dest = os.path.realpath(dest_dir)
    index = os.path.realpath(index_path or default_index_path(dest_dir))
    if index.startswith(dest + os.sep):
        raise SessionError(f"the sync index {index} must not be inside {dest}")
    md: list[tuple[str, str]] = [("dir-name", name)]
    md += [("include-patterns", p) for p in includes]
    md += [("exclude-patterns", p) for p in excludes]
    md += [("followpaths", p) for p in follow_paths]
    md.append((HEADER_TOKENS, "1"))
    if apply_owner is None:
        apply_owner = os.geteuid() == 0
    lock = _DEST_LOCKS.setdefault(dest, asyncio.Lock())
    async with lock, caller.open_stream(DIFFCOPY, Packet, md) as stream:
        return await receive_diffcopy(
            stream, dest, delete=True, apply_owner=apply_owner, index_path=index, differ=differ
        )
