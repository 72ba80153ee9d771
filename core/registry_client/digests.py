"""Content digests (``algorithm:hex``) checked while data streams through."""

from __future__ import annotations

import hashlib
import re

from bkcore.errors import SourceError

_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


def check_digest(digest: str, ref: str) -> str:
    """Return ``digest`` if it is a sha256/sha512 digest; SourceError naming ``ref`` if not."""
    if not _DIGEST.match(digest):
        raise SourceError(f"{ref}: unsupported or malformed digest {digest!r}")
    return digest


def new_hasher(digest: str) -> hashlib._Hash:
    return hashlib.new(digest.split(":", 1)[0])


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
