"""The receiver's content index: what it knows about each file it wrote.

One JSON document per destination, kept beside it (never inside the synced tree), replaced
atomically at the end of a sync that changed it. It is stored by column (one list of paths,
one of tokens, ...): the C JSON codec then handles 10,000 records in a few milliseconds.
A record maps a path to:

* ``token``: the sender's change token for the file when it was last verified (see
  :func:`bkcore.session.filesync.walker.change_token`), ``""`` when none was trusted;
* ``sha256``: the content digest, computed while receiving or when verified by hash;
* ``ino``/``ctime``: the destination file's inode and ctime right after it was written or
  verified. A record whose destination file no longer has them is ignored: the file was
  changed behind the receiver's back, or a crash lost the index update. The index therefore
  never needs to be in sync with the tree to be safe, only to be fast.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

__all__ = ["Record", "load_index", "save_index"]

_VERSION = 2


@dataclass(slots=True)
class Record:
    token: str
    sha256: str
    ino: int
    ctime: int

    def valid_for(self, s: os.stat_result) -> bool:
        return self.ino == s.st_ino and self.ctime == s.st_ctime_ns


def load_index(path: str) -> dict[str, Record]:
    """Records from ``path``; a missing, unreadable or foreign file gives an empty index."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != _VERSION:
        return {}
    try:
        paths, tokens, digests, inodes, ctimes = doc["files"]
        if not len(paths) == len(tokens) == len(digests) == len(inodes) == len(ctimes):
            return {}
        if not all(type(x) is str for x in (*paths, *tokens, *digests)) or not all(
            type(x) is int for x in (*inodes, *ctimes)
        ):
            return {}
    except (KeyError, TypeError, ValueError):
        return {}
    return dict(zip(paths, map(Record, tokens, digests, inodes, ctimes), strict=True))


def save_index(path: str, records: dict[str, Record]) -> None:
    """Write ``records`` to ``path`` atomically (temp file + rename)."""
    values = records.values()
    columns = [
        list(records),
        [r.token for r in values],
        [r.sha256 for r in values],
        [r.ino for r in values],
        [r.ctime for r in values],
    ]
    doc = {"version": _VERSION, "files": columns}
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bkindex-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, separators=(",", ":")))  # dumps uses the C encoder
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
