"""Parsing ``http(s)://URL`` source ops and their cache key strings (spec/solver.md §2.3).

Attrs (spec/llb.md §5, BuildKit's names): ``http.checksum`` (``sha256:<hex>``; sha384 and
sha512 work too), ``http.filename`` (a plain file name), ``http.perm``, ``http.uid`` and
``http.gid`` (integers as Go's ``strconv.ParseInt(v, 0, 64)`` reads them: ``0640`` is octal,
``0x1a4`` hex, ``420`` decimal).

Key: ``sha256:`` of the Go JSON ``{"Filename","Perm","UID","GID","Checksum"[,"LastModTime"]}``
where ``Perm`` is the attr as given (0 when unset, although the file is written 0600).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from urllib.parse import unquote, urlsplit

from bkcore.errors import SourceError
from bkcore.ops.cachejson import JSONValue, go_json

__all__ = [
    "DEFAULT_FILENAME",
    "DEFAULT_PERM",
    "HTTPSpec",
    "file_name",
    "go_parse_int",
    "key_string",
    "parse",
    "redact",
    "url_hash",
]

#: File name when neither the attr, Content-Disposition nor the URL path gives one.
DEFAULT_FILENAME = "download"
#: Mode of the file when ``http.perm`` is unset (BuildKit's default).
DEFAULT_PERM = 0o600

_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})")
_GO_INT = re.compile(r"([+-]?)(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|0[0-7_]*|[1-9][0-9_]*)")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def redact(url: str) -> str:
    """``url`` with any ``user[:password]@`` replaced by ``***@`` (for messages)."""
    return _USERINFO.sub(r"\1***@", url)


def go_parse_int(text: str) -> int:
    """Go's ``strconv.ParseInt(text, 0, 64)``: base from the prefix, a leading 0 is octal.

    ValueError when ``text`` is not such a number or does not fit 64 bits.
    """
    m = _GO_INT.fullmatch(text)
    if m is None:
        raise ValueError(text)
    sign, body = m.groups()
    if "_" in body and (body.startswith("_") or body.endswith("_") or "__" in body):
        raise ValueError(text)
    digits = body.replace("_", "")
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXoObB":
        value = int(digits[1:], 8)
    else:
        value = int(digits, 0)
    value = -value if sign == "-" else value
    if not -(2**63) <= value < 2**63:
        raise ValueError(text)
    return value


def _valid_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


@dataclass(frozen=True, slots=True)
class HTTPSpec:
    """A parsed http(s) source op; ``perm`` 0 means unset (the file gets 0600)."""

    url: str
    checksum: str = ""
    filename: str = ""
    perm: int = 0
    uid: int = 0
    gid: int = 0

    @property
    def label(self) -> str:
        """The URL without credentials, for messages and descriptions."""
        return redact(self.url)

    @property
    def mode(self) -> int:
        return self.perm if self.perm else DEFAULT_PERM


def _int_attr(attrs: Mapping[str, str], key: str, url: str) -> int:
    raw = attrs.get(key, "")
    if not raw:
        return 0
    try:
        return go_parse_int(raw)
    except ValueError:
        raise SourceError(f"invalid {key} {raw!r} for {redact(url)}: expected a number") from None


def parse(identifier: str, attrs: Mapping[str, str]) -> HTTPSpec:
    """The :class:`HTTPSpec` of ``http(s)://...`` and its ``http.*`` attrs."""
    if not identifier.startswith(("http://", "https://")):
        raise SourceError(f"invalid http source {redact(identifier)!r}: expected http(s)://URL")
    try:
        parts = urlsplit(identifier)
        parts.port  # noqa: B018 (validates the port)
    except ValueError as exc:
        raise SourceError(f"invalid URL {redact(identifier)!r}: {exc}") from None
    if not parts.hostname:
        raise SourceError(f"invalid URL {redact(identifier)!r}: no host")
    label = redact(identifier)
    checksum = attrs.get("http.checksum", "")
    if checksum and not _DIGEST.fullmatch(checksum):
        raise SourceError(
            f"invalid http.checksum {checksum!r} for {label}: expected sha256:<64 hex digits>"
        )
    filename = attrs.get("http.filename", "")
    if filename and not _valid_name(filename):
        raise SourceError(
            f"invalid http.filename {filename!r} for {label}: expected a file name without '/'"
        )
    perm = _int_attr(attrs, "http.perm", identifier)
    if not 0 <= perm <= 0o7777:
        raise SourceError(f"invalid http.perm {attrs['http.perm']!r} for {label}")
    uid = _int_attr(attrs, "http.uid", identifier)
    gid = _int_attr(attrs, "http.gid", identifier)
    if not (0 <= uid < 2**32 and 0 <= gid < 2**32):
        raise SourceError(f"invalid http.uid/http.gid for {label}: out of range")
    return HTTPSpec(identifier, checksum, filename, perm, uid, gid)


def file_name(spec: HTTPSpec, content_disposition: str | None = None) -> str:
    """The name of the downloaded file, as BuildKit chooses it: ``http.filename``, else the
    ``filename`` parameter of a Content-Disposition header (its base name), else the last
    segment of the URL path, else ``download``."""
    if spec.filename:
        return spec.filename
    if content_disposition:
        msg = Message()
        msg["content-disposition"] = content_disposition
        param = msg.get_param("filename", header="content-disposition")
        value = param if isinstance(param, str) else None
        if value and not value.endswith("/"):
            base = value.rsplit("/", 1)[-1]
            if _valid_name(base):
                return base
    # Go's path.Base of the decoded path: trailing slashes dropped, the last element.
    base = unquote(urlsplit(spec.url).path).rstrip("/").rsplit("/", 1)[-1]
    return base if _valid_name(base) else DEFAULT_FILENAME


def key_string(spec: HTTPSpec, filename: str, checksum: str, last_modified: str = "") -> str:
    """The cache key string: ``sha256:`` of the Go JSON BuildKit hashes."""
    doc: dict[str, JSONValue] = {
        "Filename": filename,
        "Perm": spec.perm,
        "UID": spec.uid,
        "GID": spec.gid,
        "Checksum": checksum,
    }
    if last_modified:
        doc["LastModTime"] = last_modified
    return "sha256:" + hashlib.sha256(go_json(doc).encode()).hexdigest()


def url_hash(spec: HTTPSpec) -> str:
    """Hex digest naming what is remembered about this URL (ETags, Last-Modified).

    BuildKit leaves the URL out of this hash (so two URLs ending in the same file name share
    their ETags); here the URL counts, so unrelated servers never answer for each other.
    """
    doc: dict[str, JSONValue] = {
        "URL": spec.url,
        "Filename": spec.filename,
        "Perm": spec.perm,
        "UID": spec.uid,
        "GID": spec.gid,
    }
    return hashlib.sha256(go_json(doc).encode()).hexdigest()
