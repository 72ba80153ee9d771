"""Owners of created files and user/group name lookup inside a root file system."""

from __future__ import annotations

from dataclasses import dataclass

from bkcore.fs.errors import FileOpError
from bkcore.fs.securepath import resolve


@dataclass(frozen=True)
class Owner:
    """Numeric owner applied to created or copied entries."""

    uid: int
    gid: int


def _lookup(root: str, db: str, name: str) -> int:
    if name.isdigit():
        return int(name)
    path = resolve(root, db, follow_final=True)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise FileOpError(f"unable to find {name!r}: cannot read {db}: {exc.strerror}") from exc
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name:
            try:
                return int(fields[2])
            except ValueError as exc:
                raise FileOpError(f"invalid id for {name!r} in {db}") from exc
    kind = "user" if db == "/etc/passwd" else "group"
    raise FileOpError(f"unable to find {kind} {name}: no matching entries in {db[5:]} file")


def lookup_user(root: str, name: str) -> int:
    """The uid of user *name* from *root*'s /etc/passwd (a decimal name is the id itself)."""
    return _lookup(root, "/etc/passwd", name)


def lookup_group(root: str, name: str) -> int:
    """The gid of group *name* from *root*'s /etc/group (a decimal name is the id itself)."""
    return _lookup(root, "/etc/group", name)
