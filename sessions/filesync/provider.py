"""FileSync, client side: serve local directories to the daemon (session.md §5).

The daemon side (:func:`bkcore.session.filesync.sync_dir`) and the diffcopy codec live in
:mod:`bkcore.session.filesync`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from bkcore.session.filesync.packets import Packet
from bkcore.session.filesync.receiver import HEADER_TOKENS
from bkcore.session.filesync.sender import send_diffcopy
from bkcore.session.filesync.sync import DIFFCOPY
from bkcore.session.filesync.walker import walk
from bkcore.session.transport import CallError, Handler, ServerStream, Status

__all__ = ["FileSyncProvider", "SyncedDir"]


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
