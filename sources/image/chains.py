"""Where pulled layers live: chain ID -> committed snapshot id, shared by every image.

The records, their locks and the download directories are :mod:`bkcore.layers.pull` (shared
with the ``oci-layout`` source); the names stay importable from here.
"""

from __future__ import annotations

from bkcore.layers.pull import (
    CHAINS_DIR,
    LOCKS_DIR,
    PULL_DIR,
    chain_file_lock,
    lookup,
    pull_dir,
    record,
    sweep_pull_dirs,
)

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
