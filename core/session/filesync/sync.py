"""The daemon side of FileSync: bring a directory up to date with a client's (session.md §5).

The client side (the attachable serving ``FileSync.DiffCopy``) is
``bkcore.sessions.filesync.provider.FileSyncProvider``; both use the method name
:data:`DIFFCOPY` and the ``bkcore-change-tokens`` header defined here and in :mod:`.receiver`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Literal

from bkcore.errors import SessionError
from bkcore.session.filesync.packets import Packet
from bkcore.session.filesync.receiver import HEADER_TOKENS, SyncResult, receive_diffcopy
from bkcore.session.transport import Caller

__all__ = ["DIFFCOPY", "default_index_path", "sync_dir"]

DIFFCOPY = "/moby.filesync.v1.FileSync/DiffCopy"

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
