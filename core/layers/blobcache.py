"""Compressed layer blobs kept in the content store, found again by (diff ID, compression).

An index next to the content store's blobs (``<content root>/layers/``) maps a diff ID and a
compression to the blob made for it, and an optional caller key (a committed snapshot's id)
to the diff ID of its tar, so a layer already exported is neither re-archived nor
recompressed. An entry whose blob was pruned is a miss. Index files are written to a temp
name and renamed, so concurrent exporters at worst both compress and agree on the result.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bkcore.cache.content import ContentStore, check_digest
from bkcore.cache.procs import me
from bkcore.errors import BkError, CacheError, ExportError
from bkcore.layers.compress import (
    EMPTY_LAYER_DIFF_ID,
    GO_EMPTY_GZIP,
    CompressedBlob,
    Compression,
    compress_tar,
)
from bkcore.layers.write import TarInfo, Writable


@dataclass(frozen=True, slots=True)
class LayerOrigin:
    """The blob a snapshot was made from (a pulled layer): kept as it is when exported."""

    digest: str
    size: int
    media_type: str
    diff_id: str


class LayerBlobCache:
    """The (diff ID, compression) → blob index of one content store."""

    def __init__(self, content: ContentStore) -> None:
        self.content = content
        self.dir = content.root / "layers"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.compressions = 0  # how many blobs this object compressed (for callers/tests)

    def _entry(self, diff_id: str, compression: Compression) -> Path:
        return self.dir / f"{check_digest(diff_id)}.{compression}"

    def _key_file(self, key: str) -> Path:
        return self.dir / ("key-" + hashlib.sha256(key.encode()).hexdigest())

    def _write(self, path: Path, text: str) -> None:
        pid, started = me()
        tmp = path.with_name(f".{path.name}.{pid}-{started}-{secrets.token_hex(4)}")
        tmp.write_text(text)
        os.replace(tmp, path)

    def lookup(self, diff_id: str, compression: Compression) -> CompressedBlob | None:
        """The stored blob for this diff ID and compression, or None."""
        try:
            rec = json.loads(self._entry(diff_id, compression).read_text())
        except (FileNotFoundError, ValueError):
            return None
        digest = str(rec.get("digest", ""))
        try:
            if not self.content.has(digest):
                return None
        except CacheError:
            return None
        return CompressedBlob(digest, self.content.size(digest), diff_id, compression)

    def record(self, blob: CompressedBlob) -> None:
        self._write(
            self._entry(blob.diff_id, blob.compression), json.dumps({"digest": blob.digest})
        )

    def diff_id_of(self, key: str) -> str | None:
        try:
            text = self._key_file(key).read_text().strip()
            check_digest(text)
        except (FileNotFoundError, CacheError):
            return None
        return text

    def remember(self, key: str, diff_id: str) -> None:
        self._write(self._key_file(key), diff_id)

    # -- provenance: pulled layers keep their blobs; blobs remember where they were seen ---

    def _origin_file(self, snapshot_id: str) -> Path:
        return self.dir / ("origin-" + hashlib.sha256(snapshot_id.encode()).hexdigest())

    def record_origin(self, snapshot_id: str, origin: LayerOrigin) -> None:
        """Record that the committed ``snapshot_id`` is the layer blob ``origin`` applied
        (the image source calls this after pulling), so exports reuse that blob."""
        check_digest(origin.digest)
        doc = {
            "digest": origin.digest,
            "size": origin.size,
            "mediaType": origin.media_type,
            "diffID": origin.diff_id,
        }
        self._write(self._origin_file(snapshot_id), json.dumps(doc))

    def origin(self, snapshot_id: str) -> LayerOrigin | None:
        """The recorded origin blob of ``snapshot_id`` if it is still in the content store."""
        try:
            doc = json.loads(self._origin_file(snapshot_id).read_text())
            found = LayerOrigin(
                str(doc["digest"]), int(doc["size"]), str(doc["mediaType"]), str(doc["diffID"])
            )
            if not self.content.has(found.digest):
                return None
        except (FileNotFoundError, ValueError, KeyError, TypeError, CacheError):
            return None
        return found

    def _sources_file(self, digest: str) -> Path:
        return self.dir / f"sources-{check_digest(digest)}"

    def add_source(self, digest: str, host: str, repository: str) -> None:
        """Remember that registry ``host`` holds ``digest`` in ``repository`` (containerd's
        ``distribution.source`` label: a later push to that host can mount it from there)."""
        found = self.sources(digest)
        if found.get(host) == repository:
            return
        found[host] = repository
        self._write(self._sources_file(digest), json.dumps(found, sort_keys=True))

    def sources(self, digest: str) -> dict[str, str]:
        """Registry host -> repository known to hold ``digest``."""
        try:
            doc = json.loads(self._sources_file(digest).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(doc, dict):
            return {}
        return {str(k): str(v) for k, v in doc.items()}

    def get_or_create(
        self,
        produce: Callable[[Writable], TarInfo | None],
        compression: Compression,
        *,
        level: int | None = None,
        key: str | None = None,
    ) -> CompressedBlob:
        """The blob of the tar ``produce`` writes, compressed with ``compression``.

        With ``key`` (a stable name of the tar's content, such as a committed snapshot id
        plus the epoch) a layer seen before is returned without writing its tar at all.
        Otherwise the tar is written and compressed once; when its diff ID already has a
        blob of this compression, that blob is returned and the new bytes are dropped.
        Blocking: use :meth:`get_or_create_async` from async code.
        """
        if key is not None:
            known = self.diff_id_of(key)
            if known is not None:
                hit = self.lookup(known, compression)
                if hit is not None:
                    return hit
        pid, started = me()
        tmp = self.content.ingest_dir / f"{pid}-{started}-{secrets.token_hex(8)}"
        try:
            with open(tmp, "xb") as out:
                made = compress_tar(produce, out, compression, level=level)
            self.compressions += 1
            if made.diff_id == EMPTY_LAYER_DIFF_ID and compression == "gzip":
                # An empty diff: Go's gzip bytes for it, so the blob is BuildKit's own.
                tmp.write_bytes(GO_EMPTY_GZIP)
                made = CompressedBlob(
                    "sha256:" + hashlib.sha256(GO_EMPTY_GZIP).hexdigest(),
                    len(GO_EMPTY_GZIP),
                    made.diff_id,
                    compression,
                )
            if key is not None:
                self.remember(key, made.diff_id)
            hit = self.lookup(made.diff_id, compression)
            if hit is not None:
                return hit
            self.content.ingest(tmp, made.digest)
            self.record(made)
            return made
        except BkError:
            raise
        except OSError as exc:
            raise ExportError(f"layer: cannot write blob: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    async def get_or_create_async(
        self,
        produce: Callable[[Writable], TarInfo | None],
        compression: Compression,
        *,
        level: int | None = None,
        key: str | None = None,
    ) -> CompressedBlob:
        return await asyncio.to_thread(
            self.get_or_create, produce, compression, level=level, key=key
        )
