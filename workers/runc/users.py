"""Resolve a BuildKit ``user`` string against the rootfs's ``/etc/passwd`` and ``/etc/group``.

Accepted forms: ``""`` (root), ``uid``, ``uid:gid``, ``name``, ``name:group`` (and mixes such
as ``name:gid``). Semantics follow BuildKit v0.11: a numeric ``uid:gid`` pair is used as is;
otherwise the user is looked up in passwd (by name or by uid); a numeric uid missing from
passwd is used with gid 0; a user matched by name (or uid) without an explicit group gets its
supplementary groups from ``/etc/group``; an explicit group is looked up by name or gid.
"""

from __future__ import annotations

from dataclasses import dataclass

from bkcore.errors import SolveError

from .rootpath import read_regular_file

_MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class _PasswdEntry:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class _GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _parse_id(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def _lines(data: bytes | None) -> list[list[str]]:
    if not data:
        return []
    rows: list[list[str]] = []
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def parse_passwd(data: bytes | None) -> list[_PasswdEntry]:
    entries: list[_PasswdEntry] = []
    for fields in _lines(data):
        if len(fields) < 4:
            continue
        uid, gid = _parse_id(fields[2]), _parse_id(fields[3])
        if uid is None or gid is None:
            continue
        entries.append(_PasswdEntry(fields[0], uid, gid))
    return entries


def parse_group(data: bytes | None) -> list[_GroupEntry]:
    entries: list[_GroupEntry] = []
    for fields in _lines(data):
        if len(fields) < 3:
            continue
        gid = _parse_id(fields[2])
        if gid is None:
            continue
        members = tuple(m for m in fields[3].split(",") if m) if len(fields) > 3 else ()
        entries.append(_GroupEntry(fields[0], gid, members))
    return entries


def resolve_user(rootfs: str, user: str) -> ResolvedUser:
    """Resolve ``user`` inside ``rootfs``; raises ``SolveError`` for unknown names.

    The process's groups always start with its primary gid, as under BuildKit (`id` prints
    ``groups=50(staff)`` for ``USER app:staff`` and ``groups=1000(app),44(video)`` for
    ``USER app``; conformance 036), then the groups listing the user by name."""
    found = _resolve(rootfs, user)
    extra = tuple(g for g in found.additional_gids if g != found.gid)
    return ResolvedUser(found.uid, found.gid, (found.gid, *extra))


def _resolve(rootfs: str, user: str) -> ResolvedUser:
    if user == "":
        # No USER: uid 0, with root's supplementary groups from /etc/group as BuildKit gives
        # them (`id` prints groups=0(root),10(wheel) when /etc/group lists root in wheel).
        user = "0"
    user_part, sep, group_part = user.partition(":")
    uid_num, gid_num = _parse_id(user_part), _parse_id(group_part)
    if sep and uid_num is not None and gid_num is not None:
        return ResolvedUser(uid_num, gid_num)

    passwd = parse_passwd(read_regular_file(rootfs, "/etc/passwd"))
    match = next((e for e in passwd if e.name == user_part or e.uid == uid_num), None)
    if match is None:
        if uid_num is None:
            raise SolveError(f"unable to find user {user_part}: no matching entries in passwd file")
        uid, gid, name = uid_num, 0, ""
    else:
        uid, gid, name = match.uid, match.gid, match.name

    if not group_part and not name:
        return ResolvedUser(uid, gid)
    groups = parse_group(read_regular_file(rootfs, "/etc/group"))
    if group_part:
        found = next((g for g in groups if g.name == group_part or g.gid == gid_num), None)
        if found is not None:
            return ResolvedUser(uid, found.gid)
        if gid_num is None:
            raise SolveError(
                f"unable to find group {group_part}: no matching entries in group file"
            )
        return ResolvedUser(uid, gid_num)
    extra = tuple(g.gid for g in groups if name in g.members)
    return ResolvedUser(uid, gid, extra)
