"""Content-addressed blob store laid out like an OCI image layout (``blobs/sha256/<hex>``).

Blobs are written to a temporary file under ``ingest/``, hashed while written, verified and
then renamed into place, so a reader never sees a partial blob and a digest mismatch leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import BinaryIO

from bkcore.cache import procs
from bkcore.cache.db import Database
from bkcore.errors import CacheError

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20


def check_digest(digest: str) -> str:
    """Return the hex part of a ``sha256:<hex>`` digest, or raise CacheError."""
    if not _DIGEST.match(digest):
        raise CacheError(f"invalid digest {digest!r} (want sha256:<64 hex>)")
    return digest[7:]


class ContentStore:
    """Blobs under ``root/blobs/sha256``; rows in the ``blobs`` table record size and use."""

    def __init__(self, root: Path, db: Database) -> None:
        self.root = root
        self.db = db
        self.blob_dir = root / "blobs" / "sha256"
        self.ingest_dir = root / "ingest"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (it may not exist)."""
        return self.blob_dir / check_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError as exc:
            raise CacheError(f"blob {digest} not found") from exc

    def ingest(self, source: BinaryIO | Path, expected_digest: str | None = None) -> str:
        """Store the bytes of ``source`` (a readable binary stream or a file path).

        Returns the digest. With ``expected_digest`` the content must match it, else nothing is
        kept and CacheError names both digests. Blocking: call through ``asyncio.to_thread``.
        """
        if expected_digest is not None:
            check_digest(expected_digest)
            if self.has(expected_digest):
                self._touch(expected_digest)
                return expected_digest
        pid, started = procs.me()
        tmp = self.ingest_dir / f"{pid}-{started}-{secrets.token_hex(8)}"
        h = hashlib.sha256()
        try:
            if isinstance(source, Path):
                shutil.copyfile(source, tmp)  # sendfile/copy_file_range in the kernel
                with open(tmp, "rb") as out:
                    h = hashlib.file_digest(out, "sha256")
                    os.fsync(out.fileno())
            else:
                with open(tmp, "xb") as out:
                    while chunk := source.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            digest = "sha256:" + h.hexdigest()
            if expected_digest is not None and digest != expected_digest:
                raise CacheError(
                    f"content digest mismatch: expected {expected_digest}, got {digest}"
                )
            size = tmp.stat().st_size
            now = time.time()
            with self.db.tx() as c:
                os.chmod(tmp, 0o444)
                os.replace(tmp, self.path(digest))
                c.execute(
                    "INSERT INTO blobs(digest, size, created_at, last_used) VALUES (?,?,?,?)"
                    " ON CONFLICT(digest) DO UPDATE SET last_used=excluded.last_used",
                    (digest, size, now, now),
                )
            return digest
        except OSError as exc:
            raise CacheError(f"cannot store blob: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _touch(self, digest: str) -> None:
        with self.db.tx() as c:
            c.execute("UPDATE blobs SET last_used=? WHERE digest=?", (time.time(), digest))

    def delete(self, digest: str) -> None:
        """Remove a blob and its row (no check for users: see ``CacheStore.prune``)."""
        with self.db.tx() as c:
            c.execute("DELETE FROM blobs WHERE digest=?", (digest,))
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> list[str]:
        return [r["digest"] for r in self.db.query("SELECT digest FROM blobs ORDER BY digest")]

    def recover(self) -> None:
        """Remove ingest files of dead processes and reconcile rows with files on disk."""
        for entry in os.scandir(self.ingest_dir):
            parts = entry.name.split("-")
            if len(parts) == 3 and parts[0].isdigit() and procs.alive(int(parts[0]), parts[1]):
                continue
            Path(entry.path).unlink(missing_ok=True)
        on_disk = {"sha256:" + e.name for e in os.scandir(self.blob_dir)}
        rows = set(self.digests())
        now = time.time()
        with self.db.tx() as c:
            for digest in rows - on_disk:
                c.execute("DELETE FROM blobs WHERE digest=?", (digest,))
            for digest in on_disk - rows:
                if not _DIGEST.match(digest):
                    (self.blob_dir / digest[7:]).unlink(missing_ok=True)
                    continue
                size = self.path(digest).stat().st_size
                c.execute(
                    "INSERT INTO blobs(digest, size, created_at, last_used) VALUES (?,?,?,?)",
                    (digest, size, now, now),
                )
