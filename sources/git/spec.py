"""Parsing a ``git://`` source op into a :class:`GitSpec`, and its cache key string.

Identifier (spec/llb.md §5): ``git://<remote without scheme>[#<ref>[:<subdir>]]``. The remote
actually contacted is ``git.fullurl`` when set, else ``https://<remote>`` (what the daemon
assumes for a scheme-less remote). An empty ref means the remote's ``HEAD``.

Key (spec/solver.md §2.3): ``<commit>`` + ``.git`` with ``git.keepgitdir`` + ``:<subdir>``
when a subdirectory is asked for; the URL and auth settings are not part of it.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bkcore.errors import SourceError

__all__ = ["GitSpec", "is_commit", "key_string", "parse", "redact"]

SCHEME = "git://"
DEFAULT_TOKEN_SECRET = "GIT_AUTH_TOKEN"
DEFAULT_HEADER_SECRET = "GIT_AUTH_HEADER"

_COMMIT = re.compile(r"[0-9a-f]{40}")
_URL_SCHEMES = ("https://", "http://", "git://", "ssh://", "file://")
#: ``[user@]host:path`` (scp-like ssh), the host without a slash before the colon.
_SCP_LIKE = re.compile(r"[A-Za-z0-9_.~-]+@[A-Za-z0-9_.-]+:.+")
_USERINFO = re.compile(r"(://)[^/@\s]*:[^/@\s]*@")


def is_commit(ref: str) -> bool:
    """True when ``ref`` is a full (40 hex digit) commit id."""
    return _COMMIT.fullmatch(ref) is not None


def redact(text: str) -> str:
    """``text`` with any ``user:password@`` of a URL replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text)


@dataclass(frozen=True, slots=True)
class GitSpec:
    """One parsed ``git://`` op."""

    identifier: str
    url: str
    ref: str = ""
    subdir: str = ""
    #: The subdirectory as written (what the key holds), "" when it names the root.
    key_subdir: str = ""
    keep_git_dir: bool = False
    token_secret: str = DEFAULT_TOKEN_SECRET
    header_secret: str = DEFAULT_HEADER_SECRET
    known_ssh_hosts: str = ""
    ssh_socket_id: str = ""

    @property
    def label(self) -> str:
        """How errors name the source: ``git://host/repo#ref`` (no credentials)."""
        return redact(self.identifier)

    def error(self, what: str, detail: str = "") -> SourceError:
        """``git://host/repo#ref: what (detail)`` as one line, credentials hidden."""
        line = " ".join(detail.split())
        return SourceError(redact(f"{self.label}: {what}" + (f" ({line})" if line else "")))

    @property
    def transport(self) -> str:
        """``http``, ``git``, ``ssh`` or ``file``."""
        if self.url.startswith(("https://", "http://")):
            return "http"
        if self.url.startswith("git://"):
            return "git"
        if self.url.startswith("file://"):
            return "file"
        return "ssh"

    @property
    def ref_or_head(self) -> str:
        return self.ref or "HEAD"


def _check_not_option(what: str, value: str, identifier: str) -> None:
    if value.startswith("-"):
        raise SourceError(f"{redact(identifier)}: {what} {value!r} looks like an option")


def _clean_subdir(raw: str, identifier: str) -> str:
    if not raw:
        return ""
    if "\0" in raw:
        raise SourceError(f"{redact(identifier)}: invalid subdirectory {raw!r}")
    cleaned = posixpath.normpath("/" + raw).lstrip("/")
    return "" if cleaned in ("", ".") else cleaned


def _check_url(url: str, identifier: str) -> None:
    _check_not_option("remote", url, identifier)
    if any(c in url for c in "\0\n\r"):
        raise SourceError(f"{redact(identifier)}: invalid remote {redact(url)!r}")
    if url.startswith(_URL_SCHEMES):
        rest = url.split("://", 1)[1]
        if not rest or (not url.startswith("file://") and rest.startswith("/")):
            raise SourceError(f"{redact(identifier)}: invalid remote {redact(url)!r}")
        return
    if _SCP_LIKE.fullmatch(url):
        return
    raise SourceError(
        f"{redact(identifier)}: unsupported remote {redact(url)!r} "
        "(expected https://, http://, git://, ssh://, file:// or user@host:path)"
    )


def parse(identifier: str, attrs: Mapping[str, str]) -> GitSpec:
    """The :class:`GitSpec` of ``git://...`` and its ``git.*`` attrs; SourceError when bad."""
    if not identifier.startswith(SCHEME):
        raise SourceError(f"invalid git source {identifier!r}: expected git://REMOTE#REF")
    rest = identifier[len(SCHEME) :]
    remote, _, fragment = rest.partition("#")
    if not remote:
        raise SourceError(f"invalid git source {redact(identifier)!r}: the remote is empty")
    ref, _, raw_subdir = fragment.partition(":")
    _check_not_option("ref", ref, identifier)
    if any(c in ref for c in "\0\n\r \t") or ref.endswith("^{}"):
        raise SourceError(f"{redact(identifier)}: invalid ref {ref!r}")
    subdir = _clean_subdir(raw_subdir, identifier)
    url = attrs.get("git.fullurl", "") or "https://" + remote
    _check_url(url, identifier)
    keep = attrs.get("git.keepgitdir", "")
    if keep not in ("", "true", "false"):
        raise SourceError(f"{redact(identifier)}: invalid git.keepgitdir {keep!r}")
    return GitSpec(
        identifier=identifier,
        url=url,
        ref=ref,
        subdir=subdir,
        key_subdir=raw_subdir if subdir else "",
        keep_git_dir=keep == "true",
        token_secret=attrs.get("git.authtokensecret", "") or DEFAULT_TOKEN_SECRET,
        header_secret=attrs.get("git.authheadersecret", "") or DEFAULT_HEADER_SECRET,
        known_ssh_hosts=attrs.get("git.knownsshhosts", ""),
        ssh_socket_id=attrs.get("git.mountsshsock", ""),
    )


def key_string(spec: GitSpec, commit: str) -> str:
    """``<commit>[.git][:<subdir>]`` (the subdir as written in the identifier)."""
    key = commit + (".git" if spec.keep_git_dir else "")
    return f"{key}:{spec.key_subdir}" if spec.key_subdir else key
