"""What ``ADD`` accepts besides context paths: git repositories and http(s) URLs.

Classification follows BuildKit v0.11's ``gitutil.ParseGitRef`` and ``isHTTPSource``:

* a git reference is ``git://...``, ``ssh://...``, ``user@host:path`` (implicit SSH), or an
  ``http(s)://`` URL whose path ends in ``.git`` (optionally followed by ``#fragment``); the
  fragment is ``ref[:subdir]``. ``github.com/x/y`` is indistinguishable from a local path and
  stays a context path.
* any other ``http://``/``https://`` source is a download; the file is named after the last
  path element of the URL (``__unnamed__`` when there is none) and is never unpacked.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from dataclasses import dataclass

from bkcore import llb
from bkcore.errors import FrontendError

_IMPLICIT_SSH = re.compile(r"^[a-zA-Z0-9\-_]+@[a-zA-Z0-9\-.]+:.*$")
_GIT_URL_SUFFIX = re.compile(r"\.git(?:#.+)?$")
_DIGEST = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True, slots=True)
class GitRef:
    """A parsed git source: ``remote#commit:subdir``."""

    remote: str
    commit: str = ""
    subdir: str = ""
    short_name: str = ""
    indistinguishable_from_local: bool = False
    unencrypted_tcp: bool = False


def _protocol(ref: str) -> str:
    for prefix, kind in (
        ("http://", "http"),
        ("https://", "https"),
        ("git://", "git"),
        ("ssh://", "ssh"),
    ):
        if ref.startswith(prefix):
            return kind
    if _IMPLICIT_SSH.match(ref):
        return "ssh"
    return ""


def parse_git_ref(ref: str) -> GitRef | None:
    """The git reference ``ref`` names, or None when it is not one."""
    indistinguishable = unencrypted = False
    if ref.startswith("github.com/"):
        indistinguishable = True
    else:
        kind = _protocol(ref)
        if not kind:
            return None
        unencrypted = kind in ("http", "git")
        if kind in ("http", "https") and not _GIT_URL_SUFFIX.search(ref):
            return None
    remote, _, fragment = ref.partition("#")
    if not remote:
        return None
    commit, _, subdir = fragment.partition(":")
    short = remote.split("/")[-1].removesuffix(".git")
    return GitRef(remote, commit, subdir, short, indistinguishable, unencrypted)


def is_git_source(src: str) -> bool:
    ref = parse_git_ref(src)
    return ref is not None and not ref.indistinguishable_from_local


def is_http_source(src: str) -> bool:
    """An ``http(s)://`` download (a git URL is not one)."""
    return src.startswith(("http://", "https://")) and not is_git_source(src)


def url_filename(src: str) -> str:
    """The name BuildKit gives a downloaded file: the URL path's last element."""
    try:
        path = urllib.parse.urlsplit(src).path
    except ValueError:
        return "__unnamed__"
    base = posixpath.basename(posixpath.normpath(path)) if path else "."
    if base in (".", "/", ""):
        return "__unnamed__"
    return base


def validate_checksum(value: str) -> str:
    """A ``--checksum`` value as an OCI digest (``sha256:<64 hex>``), else FrontendError."""
    m = _DIGEST.match(value)
    if m is None:
        raise FrontendError("invalid checksum digest format")
    algo, enc = m.groups()
    want = _DIGEST_HEX_LEN.get(algo)
    if want is None:
        raise FrontendError("unsupported digest algorithm")
    if len(enc) != want or not re.fullmatch(r"[0-9a-f]+", enc):
        raise FrontendError("invalid checksum digest length")
    return value


def git_state(ref: GitRef, *, keep_git_dir: bool, meta: llb.OpMeta) -> llb.State:
    commit = ref.commit + (":" + ref.subdir if ref.subdir else "")
    return llb.git(ref.remote, commit, keep_git_dir=keep_git_dir, meta=meta)


def http_state(src: str, *, filename: str, checksum: str, meta: llb.OpMeta) -> llb.State:
    return llb.http(src, filename=filename, checksum=checksum, meta=meta)
