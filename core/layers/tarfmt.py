"""Tar header blocks as an OCI layer carries them: plain USTAR, PAX records only when needed.

USTAR fields hold ASCII names (a long name is split into the prefix field when it fits),
numeric uid/gid with empty user and group names, and octal numbers; a name or link that is
not ASCII or too long, a number too large for its field, and extended attributes go into a
PAX record block written just before the entry's own header.
"""

from __future__ import annotations

import struct

BLOCK = 512
REG, LNK, SYM, CHR, BLK, DIR, FIFO = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_PAX = b"x"
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_SMALL = 8**7  # largest value + 1 of an 8-byte octal field
_LARGE = 8**11  # of a 12-byte one


def _num(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _split_name(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for the USTAR fields, or None when ``name`` cannot be stored there."""
    if not name.isascii():
        return None
    if len(name) <= 100:
        return b"", name
    # the prefix ends at a slash; what follows it must fit in the 100-byte name field
    cut = name.find(b"/", max(len(name) - 101, 1))
    if 0 < cut <= 155 and len(name) - cut - 1 > 0:
        return name[:cut], name[cut + 1 :]
    return None


def _record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    size = len(body) + 1
    while len(str(size)) + len(body) != size:
        size = len(str(size)) + len(body)
    return str(size).encode() + body


def _block(
    name: bytes,
    prefix: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    link: bytes,
    device: tuple[int, int] | None,
) -> bytes:
    header = bytearray(
        _USTAR.pack(
            name,
            _num(mode, 8),
            _num(uid, 8),
            _num(gid, 8),
            _num(size, 12),
            _num(mtime, 12),
            b"        ",
            typeflag,
            link,
            b"ustar\0",
            b"00",
            b"",
            b"",
            _num(device[0], 8) if device else b"",
            _num(device[1], 8) if device else b"",
            prefix,
        )
    )
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header)


def header(
    name: bytes,
    typeflag: bytes,
    *,
    mode: int = 0,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    mtime: int = 0,
    link: bytes = b"",
    device: tuple[int, int] | None = None,
    xattrs: dict[str, bytes] | None = None,
) -> bytes:
    """The header block(s) of one entry (a directory ``name`` must end with ``/``)."""
    pax: list[bytes] = []
    split = _split_name(name)
    if split is None:
        pax.append(_record(b"path", name))
        split = b"", name[:100].decode("ascii", "replace").encode("ascii", "replace")[:100]
    if len(link) > 100 or not link.isascii():
        pax.append(_record(b"linkpath", link))
        link = link[:100].decode("ascii", "replace").encode("ascii", "replace")[:100]
    numbers = {"uid": (uid, _SMALL), "gid": (gid, _SMALL), "size": (size, _LARGE)}
    numbers["mtime"] = (mtime, _LARGE)
    fixed: dict[str, int] = {}
    for key, (value, limit) in numbers.items():
        if not 0 <= value < limit:
            pax.append(_record(key.encode(), str(value).encode()))
            fixed[key] = 0
        else:
            fixed[key] = value
    for key, raw in sorted((xattrs or {}).items()):
        pax.append(_record(b"SCHILY.xattr." + key.encode("utf-8", "surrogateescape"), raw))
    out = b""
    if pax:
        records = b"".join(sorted(pax))
        pax_name = (b"PaxHeaders.0/" + split[1].rsplit(b"/", 1)[-1])[:100]
        out = _block(pax_name, b"", 0o644, 0, 0, len(records), 0, _PAX, b"", None)
        out += records + bytes(-len(records) % BLOCK)
    prefix, short = split
    return out + _block(
        short,
        prefix,
        mode,
        fixed["uid"],
        fixed["gid"],
        fixed["size"],
        fixed["mtime"],
        typeflag,
        link,
        device,
    )


def end_of_archive() -> bytes:
    """Two zero blocks (the archive is not padded to a record size)."""
    return bytes(2 * BLOCK)
