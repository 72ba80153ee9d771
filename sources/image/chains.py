"""Where pulled layers live: chain ID -> committed snapshot id, shared by every image.

One small file per chain under ``<store root>/image-chains/`` names the snapshot holding that
layer chain; a snapshot pruned since is simply rebuilt (the entry is only a hint, the
snapshot itself is checked when it is adopted). A ``flock`` per chain under
``<store root>/image-chains.locks/`` makes processes sharing a store build a chain once.
Downloads go to per-process directories under ``<store root>/image-pull/`` that are swept
once their process is gone.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bkcore.cache import procs
from bkcore.filelock import locked

__all__ = [
    "CHAINS_DIR",
    "LOCKS_DIR",
    "PULL_DIR",
    "chain_file_lock",
    "lookup",
    "pull_dir",
    "record",
    "sweep_pull_dirs",
]

CHAINS_DIR = "image-chains"
LOCKS_DIR = "image-chains.locks"
PULL_DIR = "image-pull"


def _entry(root: Path, chain_id: str) -> Path:
    algo, _, hexd = chain_id.partition(":")
    return root / CHAINS_DIR / f"{algo}-{hexd}"


def lookup(root: Path, chain_id: str) -> str | None:
    """The snapshot id last recorded for ``chain_id`` (it may have been pruned since)."""
    try:
        return _entry(root, chain_id).read_text().strip() or None
    except FileNotFoundError:
        return None


def record(root: Path, chain_id: str, snapshot_id: str) -> None:
    """Record ``snapshot_id`` as the snapshot of ``chain_id`` (atomic replace)."""
    path = _entry(root, chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    tmp.write_text(snapshot_id + "\n")
    os.replace(tmp, path)


@asynccontextmanager
async def chain_file_lock(root: Path, chain_id: str) -> AsyncIterator[None]:
    """Hold the cross-process lock of ``chain_id`` (a ``flock``, polled so that waiting
    stays cancellable; the kernel drops it when its process dies)."""
    algo, _, hexd = chain_id.partition(":")
    async with locked(root / LOCKS_DIR / f"{algo}-{hexd}"):
        yield


def pull_dir(root: Path) -> Path:
    """A new private download directory of this process."""
    pid, started = procs.me()
    path = root / PULL_DIR / f"{pid}-{started}-{secrets.token_hex(6)}"
    path.mkdir(parents=True)
    return path


def sweep_pull_dirs(root: Path) -> None:
    """Remove download directories whose process is gone."""
    try:
        entries = list(os.scandir(root / PULL_DIR))
    except FileNotFoundError:
        return
    for entry in entries:
        parts = entry.name.split("-")
        if len(parts) == 3 and parts[0].isdigit() and procs.alive(int(parts[0]), parts[1]):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
