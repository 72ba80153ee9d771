"""fsutil diffcopy messages (``fsutil.types.Packet``/``Stat``) and their protobuf codec.

Messages are plain slotted classes so the in-process transport passes them without encoding;
``bytes(msg)`` and ``Cls.FromString(data)`` give the exact wire form for a gRPC transport
(session.md §5.1). One extension, ignored by Go peers as an unknown field: ``Stat.change``
(field 1001), an opaque change token the bkcore sender offers when the receiver asks for it
with the ``bkcore-change-tokens`` request header (see :mod:`.receiver`). Packet type
``PACKET_HASH`` (16) is the matching answer to a hash request; Go peers never see it because
they never ask.
"""

from __future__ import annotations

import enum
import stat as st
from typing import Any

__all__ = [
    "BytesMessage",
    "Packet",
    "PacketType",
    "Stat",
    "go_mode",
    "posix_mode",
]

# Go os.FileMode bits (session.md §5.1)
GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27
GO_DEVICE = 1 << 26
GO_PIPE = 1 << 25
GO_SOCKET = 1 << 24
GO_SETUID = 1 << 23
GO_SETGID = 1 << 22
GO_CHARDEV = 1 << 21
GO_STICKY = 1 << 20
GO_TYPE = GO_DIR | GO_SYMLINK | GO_DEVICE | GO_PIPE | GO_SOCKET | GO_CHARDEV

_U64 = (1 << 64) - 1


class PacketType(enum.IntEnum):
    STAT = 0
    REQ = 1
    DATA = 2
    FIN = 3
    ERR = 4
    HASH = 16  # bkcore extension: DATA{ID} answered with the file's sha256 only


def go_mode(mode: int) -> int:
    """POSIX ``st_mode`` to Go ``os.FileMode`` bits (socket bit cleared, as fsutil does)."""
    out = mode & 0o777
    fmt = st.S_IFMT(mode)
    if fmt == st.S_IFDIR:
        out |= GO_DIR
    elif fmt == st.S_IFLNK:
        out |= GO_SYMLINK
    elif fmt == st.S_IFBLK:
        out |= GO_DEVICE
    elif fmt == st.S_IFCHR:
        out |= GO_DEVICE | GO_CHARDEV
    elif fmt == st.S_IFIFO:
        out |= GO_PIPE
    if mode & st.S_ISUID:
        out |= GO_SETUID
    if mode & st.S_ISGID:
        out |= GO_SETGID
    if mode & st.S_ISVTX:
        out |= GO_STICKY
    return out


def posix_mode(mode: int) -> int:
    """Go ``os.FileMode`` bits to POSIX ``st_mode`` (type and permission bits)."""
    out = mode & 0o777
    if mode & GO_DIR:
        out |= st.S_IFDIR
    elif mode & GO_SYMLINK:
        out |= st.S_IFLNK
    elif mode & GO_DEVICE:
        out |= st.S_IFCHR if mode & GO_CHARDEV else st.S_IFBLK
    elif mode & GO_PIPE:
        out |= st.S_IFIFO
    elif mode & GO_SOCKET:
        out |= st.S_IFSOCK
    else:
        out |= st.S_IFREG
    if mode & GO_SETUID:
        out |= st.S_ISUID
    if mode & GO_SETGID:
        out |= st.S_ISGID
    if mode & GO_STICKY:
        out |= st.S_ISVTX
    return out


# -- protobuf primitives ---------------------------------------------------------------------


def _varint(value: int, out: bytearray) -> None:
    value &= _U64
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _signed(value: int) -> int:
    return value - (1 << 64) if value & (1 << 63) else value


def _key(field: int, wire: int, out: bytearray) -> None:
    _varint((field << 3) | wire, out)


def _put_varint_field(field: int, value: int, out: bytearray) -> None:
    if value:
        _key(field, 0, out)
        _varint(value, out)


def _put_bytes_field(field: int, value: bytes, out: bytearray) -> None:
    if value:
        _key(field, 2, out)
        _varint(len(value), out)
        out += value


def _fields(data: bytes | memoryview) -> Any:
    """Yield ``(field, wire_type, value)``; value is an int or a memoryview."""
    view = memoryview(data)
    pos = 0
    end = len(view)
    while pos < end:
        key, pos = _read_varint(view, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(view, pos)
            yield field, wire, value
        elif wire == 2:
            length, pos = _read_varint(view, pos)
            if pos + length > end:
                raise ValueError("truncated field")
            yield field, wire, view[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated field")


# -- messages --------------------------------------------------------------------------------


class Stat:
    """``fsutil.types.Stat``: one entry of a listing. ``mode`` is Go ``os.FileMode``."""

    __slots__ = (
        "change",
        "devmajor",
        "devminor",
        "gid",
        "linkname",
        "mod_time",
        "mode",
        "path",
        "size",
        "uid",
        "xattrs",
    )

    def __init__(
        self,
        path: str = "",
        mode: int = 0,
        uid: int = 0,
        gid: int = 0,
        size: int = 0,
        mod_time: int = 0,
        linkname: str = "",
        devmajor: int = 0,
        devminor: int = 0,
        xattrs: dict[str, bytes] | None = None,
        change: str = "",
    ) -> None:
        self.path = path
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mod_time = mod_time
        self.linkname = linkname
        self.devmajor = devmajor
        self.devminor = devminor
        self.xattrs = xattrs if xattrs is not None else {}
        self.change = change

    def is_dir(self) -> bool:
        return bool(self.mode & GO_DIR)

    def is_symlink(self) -> bool:
        return bool(self.mode & GO_SYMLINK)

    def is_regular(self) -> bool:
        return not self.mode & GO_TYPE

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stat):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:
        return f"Stat(path={self.path!r}, mode={self.mode:#o}, size={self.size})"

    def __bytes__(self) -> bytes:
        out = bytearray()
        _put_bytes_field(1, self.path.encode("utf-8", "surrogateescape"), out)
        _put_varint_field(2, self.mode & 0xFFFFFFFF, out)
        _put_varint_field(3, self.uid, out)
        _put_varint_field(4, self.gid, out)
        _put_varint_field(5, self.size, out)
        _put_varint_field(6, self.mod_time, out)
        _put_bytes_field(7, self.linkname.encode("utf-8", "surrogateescape"), out)
        _put_varint_field(8, self.devmajor, out)
        _put_varint_field(9, self.devminor, out)
        for name in sorted(self.xattrs):
            entry = bytearray()
            _put_bytes_field(1, name.encode("utf-8", "surrogateescape"), entry)
            _put_bytes_field(2, self.xattrs[name], entry)
            _key(10, 2, out)
            _varint(len(entry), out)
            out += entry
        _put_bytes_field(1001, self.change.encode(), out)
        return bytes(out)

    @classmethod
    def FromString(cls, data: bytes | memoryview) -> Stat:
        return cls._decode(bytes(data), 0, len(data))

    @classmethod
    def _decode(cls, data: bytes, pos: int, end: int) -> Stat:
        """Decode ``data[pos:end]``; one-byte keys and varints (nearly all of a listing)
        are read inline, anything else as :meth:`_decode_slow` does."""
        s = cls()
        while pos < end:
            key = data[pos]
            if key >= 0x80:
                return cls._decode_slow(data[pos:end], s)
            pos += 1
            wire = key & 7
            if wire == 0:
                value = data[pos] if pos < end else 0x80
                if value < 0x80:
                    pos += 1
                else:
                    value, pos = _read_varint(data, pos)
                    if pos > end:
                        raise ValueError("truncated field")
                field = key >> 3
                if field == 2:
                    s.mode = value & 0xFFFFFFFF
                elif field == 3:
                    s.uid = value & 0xFFFFFFFF
                elif field == 4:
                    s.gid = value & 0xFFFFFFFF
                elif field == 5:
                    s.size = _signed(value)
                elif field == 6:
                    s.mod_time = _signed(value)
                elif field == 8:
                    s.devmajor = _signed(value)
                elif field == 9:
                    s.devminor = _signed(value)
            elif wire == 2 and key != 0x52:  # 0x52: field 10 (xattrs), rare
                n = data[pos] if pos < end else 0x80
                if n < 0x80:
                    pos += 1
                else:
                    n, pos = _read_varint(data, pos)
                if pos + n > end:
                    raise ValueError("truncated field")
                field = key >> 3
                if field == 1:
                    s.path = data[pos : pos + n].decode("utf-8", "surrogateescape")
                elif field == 7:
                    s.linkname = data[pos : pos + n].decode("utf-8", "surrogateescape")
                pos += n
            else:
                return cls._decode_slow(data[pos - 1 : end], s)
        return s

    @classmethod
    def _decode_slow(cls, data: bytes | memoryview, s: Stat | None = None) -> Stat:
        """The general decoder, continuing ``s`` (fields decoded so far) if given."""
        if s is None:
            s = cls()
        for field, wire, value in _fields(data):
            if wire == 2:
                if field == 1:
                    s.path = bytes(value).decode("utf-8", "surrogateescape")
                elif field == 7:
                    s.linkname = bytes(value).decode("utf-8", "surrogateescape")
                elif field == 10:
                    name, val = "", b""
                    for f2, w2, v2 in _fields(value):
                        if w2 == 2 and f2 == 1:
                            name = bytes(v2).decode("utf-8", "surrogateescape")
                        elif w2 == 2 and f2 == 2:
                            val = bytes(v2)
                    s.xattrs[name] = val
                elif field == 1001:
                    s.change = bytes(value).decode("utf-8", "replace")
            elif wire == 0:
                if field == 2:
                    s.mode = value & 0xFFFFFFFF
                elif field == 3:
                    s.uid = value & 0xFFFFFFFF
                elif field == 4:
                    s.gid = value & 0xFFFFFFFF
                elif field == 5:
                    s.size = _signed(value)
                elif field == 6:
                    s.mod_time = _signed(value)
                elif field == 8:
                    s.devmajor = _signed(value)
                elif field == 9:
                    s.devminor = _signed(value)
        return s


class Packet:
    """``fsutil.types.Packet``: ``Packet()`` (all defaults) is the end-of-listing marker."""

    __slots__ = ("data", "id", "stat", "type")

    def __init__(
        self,
        type: int = PacketType.STAT,
        stat: Stat | None = None,
        id: int = 0,
        data: bytes = b"",
    ) -> None:
        self.type = type
        self.stat = stat
        self.id = id
        self.data = data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Packet):
            return NotImplemented
        return (self.type, self.stat, self.id, self.data) == (
            other.type,
            other.stat,
            other.id,
            other.data,
        )

    def __repr__(self) -> str:
        kind = PacketType(self.type).name if self.type in PacketType._value2member_map_ else "?"
        return f"Packet({kind}, id={self.id}, stat={self.stat!r}, data={len(self.data)}B)"

    def __bytes__(self) -> bytes:
        out = bytearray()
        _put_varint_field(1, int(self.type), out)
        if self.stat is not None:
            body = bytes(self.stat)
            _key(2, 2, out)
            _varint(len(body), out)
            out += body
        _put_varint_field(3, self.id, out)
        _put_bytes_field(4, self.data, out)
        return bytes(out)

    @classmethod
    def FromString(cls, data: bytes | memoryview) -> Packet:
        data = bytes(data)
        p = cls()
        pos, end = 0, len(data)
        while pos < end:
            key = data[pos]
            pos += 1
            if key == 0x08 or key == 0x18:  # type, id: varints
                value = data[pos] if pos < end else 0x80
                if value < 0x80:
                    pos += 1
                else:
                    value, pos = _read_varint(data, pos)
                    if pos > end:
                        raise ValueError("truncated field")
                if key == 0x08:
                    p.type = value
                else:
                    p.id = value & 0xFFFFFFFF
            elif key == 0x12 or key == 0x22:  # stat, data: length-delimited
                n = data[pos] if pos < end else 0x80
                if n < 0x80:
                    pos += 1
                else:
                    n, pos = _read_varint(data, pos)
                if pos + n > end:
                    raise ValueError("truncated field")
                if key == 0x12:
                    p.stat = Stat._decode(data, pos, pos + n)
                else:
                    p.data = data[pos : pos + n]
                pos += n
            else:  # other fields (unknown to this version, or multi-byte keys)
                return cls._decode_slow(data[pos - 1 :], p)
        return p

    @classmethod
    def _decode_slow(cls, data: bytes | memoryview, p: Packet) -> Packet:
        for field, wire, value in _fields(data):
            if field == 1 and wire == 0:
                p.type = value
            elif field == 2 and wire == 2:
                p.stat = Stat.FromString(value)
            elif field == 3 and wire == 0:
                p.id = value & 0xFFFFFFFF
            elif field == 4 and wire == 2:
                p.data = bytes(value)
        return p


class BytesMessage:
    """``BytesMessage{bytes data = 1}`` (filesync and sshforward packages)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BytesMessage) and other.data == self.data

    def __repr__(self) -> str:
        return f"BytesMessage({len(self.data)}B)"

    def __bytes__(self) -> bytes:
        out = bytearray()
        _put_bytes_field(1, self.data, out)
        return bytes(out)

    @classmethod
    def FromString(cls, data: bytes | memoryview) -> BytesMessage:
        msg = cls()
        for field, wire, value in _fields(data):
            if field == 1 and wire == 2:
                msg.data = bytes(value)
        return msg
