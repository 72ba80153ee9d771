"""``RUN --mount=...`` values (BuildKit v0.11 ``commands_runmount.go`` rules).

The value is one CSV record of ``key=value`` fields and bare flags. Keys (case-insensitive):
``type`` (bind, cache, tmpfs, secret, ssh; default bind), ``from``, ``source``/``src``,
``target``/``dst``/``destination``, ``readonly``/``ro`` and ``readwrite``/``rw`` (bare or
``=bool``), ``required`` (secret/ssh only), ``size`` (tmpfs only, ``64m``-style), ``id``,
``sharing`` (shared|private|locked, cache only), ``mode`` (octal), ``uid``, ``gid`` (cache,
secret and ssh only). Bind and secret/ssh mounts are read-only unless told otherwise,
cache and tmpfs read-write. Values are expanded with the expander given; without one
(parse time) only ``from`` is checked (it may not use variables) and everything else waits
for dispatch, as in BuildKit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile.instructions.bflag import suggest
from bkcore.frontends.dockerfile.instructions.commands import Expander

__all__ = [
    "MOUNT_TYPES",
    "SHARING_MODES",
    "Mount",
    "MountError",
    "parse_mount",
    "ram_in_bytes",
]

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
_ALL_KEYS = (
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "ro",
    "rw",
    "readwrite",
)
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class MountError(FrontendError):
    """A ``--mount`` value is invalid (BuildKit's message)."""


@dataclass
class Mount:
    """One parsed ``--mount``. ``mode``/``uid``/``gid`` are None when not given."""

    type: str = "bind"
    from_: str = ""
    source: str = ""
    target: str = ""
    read_only: bool = True
    size_limit: int = 0
    cache_id: str = ""
    cache_sharing: str = ""
    required: bool = False
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


def _parse_bool(value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(value)


_RAM_RE = re.compile(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?")
_RAM_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(value: str) -> int:
    """``64m``, ``1g``, ``512kb``, ``100`` -> bytes (binary units, like go-units)."""
    match = _RAM_RE.fullmatch(value)
    if match is None:
        raise ValueError(value)
    number, unit = match.groups()
    try:
        size = float(number)
    except ValueError:
        raise ValueError(value) from None
    mult = _RAM_UNITS[unit.lower()] if unit else 1
    return int(size * mult)


def _uint(value: str, base: int) -> int:
    """Go's ``strconv.ParseUint(value, base, 32)`` for base 8 or 10."""
    digits = "01234567" if base == 8 else "0123456789"
    if not value or any(c not in digits for c in value):
        raise ValueError(value)
    result = int(value, base)
    if result >= 1 << 32:
        raise ValueError(value)
    return result


def _csv_fields(value: str) -> list[str]:
    """One record of Go's ``encoding/csv`` (comma-separated, ``"``-quoted fields, strict)."""
    if not value:
        raise MountError("failed to parse csv mounts: EOF")
    fields: list[str] = []
    pos, n = 0, len(value)
    while True:
        if pos < n and value[pos] == '"':
            start = pos
            pos += 1
            buf: list[str] = []
            while True:
                end = value.find('"', pos)
                if end < 0:
                    raise MountError(
                        f"failed to parse csv mounts: parse error on line 1, column {start + 1}: "
                        'extraneous or missing " in quoted-field'
                    )
                buf.append(value[pos:end])
                pos = end + 1
                if pos < n and value[pos] == '"':
                    buf.append('"')
                    pos += 1
                    continue
                break
            if pos < n and value[pos] != ",":
                raise MountError(
                    f"failed to parse csv mounts: parse error on line 1, column {pos + 1}: "
                    'extraneous or missing " in quoted-field'
                )
            fields.append("".join(buf))
        else:
            end = value.find(",", pos)
            end = n if end < 0 else end
            text = value[pos:end]
            quote = text.find('"')
            if quote >= 0:
                raise MountError(
                    f"failed to parse csv mounts: parse error on line 1, column {pos + quote + 1}: "
                    'bare " in non-quoted field'
                )
            fields.append(text)
            pos = end
        if pos >= n:
            return fields
        pos += 1  # the comma


def parse_mount(value: str, expand: Expander | None) -> Mount:
    """Parse one ``--mount`` value; ``expand`` None means parse time (see module doc)."""
    fields = _csv_fields(value)
    m = Mount()
    ro_auto = True
    for fld in fields:
        key, eq, raw = fld.partition("=")
        key = key.lower()
        if not eq:
            if expand is None:
                continue
            if key in ("readonly", "ro"):
                m.read_only = True
                ro_auto = False
                continue
            if key in ("readwrite", "rw"):
                m.read_only = False
                ro_auto = False
                continue
            if key == "required":
                if m.type in ("secret", "ssh"):
                    m.required = True
                    continue
                raise MountError(f"unexpected key '{key}' for mount type '{m.type}'")
            raise MountError(f"invalid field '{fld}' must be a key=value pair")
        if expand is not None:
            val = expand(raw)
        elif key == "from":
            if re.search(r"\$.", raw):
                raise MountError(
                    f"'{key}' doesn't support variable expansion, define alias stage instead"
                )
            val = raw
        else:
            continue
        if key == "type":
            lower = val.lower()
            if lower not in MOUNT_TYPES:
                raise MountError(suggest(f'unsupported mount type "{val}"', val, MOUNT_TYPES, True))
            m.type = lower
        elif key == "from":
            m.from_ = val
        elif key in ("source", "src"):
            m.source = val
        elif key in ("target", "dst", "destination"):
            m.target = val
        elif key in ("readonly", "ro", "readwrite", "rw"):
            try:
                flag = _parse_bool(val)
            except ValueError:
                raise MountError(f"invalid value for {key}: {val}") from None
            m.read_only = flag if key in ("readonly", "ro") else not flag
            ro_auto = False
        elif key == "required":
            if m.type not in ("secret", "ssh"):
                raise MountError(f"unexpected key '{key}' for mount type '{m.type}'")
            try:
                m.required = _parse_bool(val)
            except ValueError:
                raise MountError(f"invalid value for {key}: {val}") from None
        elif key == "size":
            if m.type != "tmpfs":
                raise MountError(f"unexpected key '{key}' for mount type '{m.type}'")
            try:
                m.size_limit = ram_in_bytes(val)
            except ValueError:
                raise MountError(f"invalid value for {key}: {val}") from None
        elif key == "id":
            m.cache_id = val
        elif key == "sharing":
            if val.lower() not in SHARING_MODES:
                raise MountError(f'unsupported sharing value "{val}"')
            m.cache_sharing = val.lower()
        elif key in ("mode", "uid", "gid"):
            try:
                number = _uint(val, 8 if key == "mode" else 10)
            except ValueError:
                raise MountError(f"invalid value {val} for {key}") from None
            setattr(m, key, number)
        else:
            raise MountError(suggest(f"unexpected key '{key}' in '{fld}'", key, _ALL_KEYS, True))
    file_info_allowed = m.type in ("secret", "ssh", "cache")
    for attr in ("mode", "uid", "gid"):
        if getattr(m, attr) is not None and not file_info_allowed:
            raise MountError(f'{attr} not allowed for "{m.type}" type mounts')
    if ro_auto:
        m.read_only = m.type not in ("cache", "tmpfs")
    if m.cache_sharing and m.type != "cache":
        raise MountError(f"invalid cache sharing set for {m.type} mount")
    if m.type == "secret":
        if m.from_:
            raise MountError("secret mount should not have a from")
        if m.cache_sharing:
            raise MountError("secret mount should not define sharing")
        if not m.source and not m.target and not m.cache_id:
            raise MountError("invalid secret mount. one of source, target required")
        if m.source and m.cache_id:
            raise MountError("both source and id can't be set")
    return m
