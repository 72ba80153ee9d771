"""OCI image-layout and docker-load tarballs of a built image (spec/exporters.md §5).

The layout of containerd's archive writer as BuildKit v0.11.6 uses it: entries sorted by name
and de-duplicated -- ``blobs/``, ``blobs/sha256/`` (0755), ``blobs/sha256/<hex>`` (0444),
``index.json`` (0644), ``manifest.json`` (0644), ``oci-layout`` (0444); owner 0:0, mtime 0,
USTAR headers, two zero blocks at the end. ``index.json`` (compact) holds one descriptor per
name with ``io.containerd.image.name`` (the normalised name), ``org.opencontainers.image.
ref.name`` (the tag) and ``org.opencontainers.image.created`` (export time in whole seconds,
or SOURCE_DATE_EPOCH). ``manifest.json`` lists config and layers for ``docker load``:
``RepoTags`` are the familiar names for ``docker`` and ``null`` for ``oci`` (left out for an
index).
"""

from __future__ import annotations

import datetime
import os
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bkcore.errors import ExportError
from bkcore.plugins.exporters.imagecommon import BuiltImage, go_compact
from bkcore.registry_client import Descriptor, ImageReference

__all__ = [
    "ArchiveEntry",
    "archive_chunks",
    "archive_entries",
    "familiar_name",
    "index_json",
    "manifest_json",
]

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
CREATED = "org.opencontainers.image.created"
IMAGE_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One tar entry: a directory (``data`` None, ``path`` None), bytes, or a stored blob."""

    name: str
    mode: int
    data: bytes | None = None
    path: Path | None = None
    size: int = 0


def familiar_name(ref: ImageReference) -> str:
    """Docker's short form: ``docker.io/library/`` or ``docker.io/`` dropped, tag kept."""
    name = f"{ref.domain}/{ref.repository}"
    if ref.domain == "docker.io":
        name = ref.repository
        if name.startswith("library/") and name.count("/") == 1:
            name = name[len("library/") :]
    return f"{name}:{ref.tag or 'latest'}"


def created_stamp(epoch: int | None, now: float | None = None) -> str:
    """``org.opencontainers.image.created``: RFC 3339 in whole seconds, UTC."""
    seconds = epoch if epoch is not None else int(now if now is not None else time.time())
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def index_json(image: BuiltImage, refs: Sequence[ImageReference], created: str) -> bytes:
    """``index.json``: one descriptor of the top object per name (one without a name)."""
    platform = None if image.is_index else image.images[0].descriptor.platform
    entries: list[dict[str, Any]] = []
    named: list[ImageReference | None] = list(refs) or [None]
    # annotation-manifest-descriptor.* (annotation-index-descriptor.* for an index) land here
    if image.is_index:
        own = dict(image.index_annotations)
    else:
        own = dict(image.images[0].descriptor.annotations)
    for ref in named:
        annotations = {**own, CREATED: created}
        if ref is not None:
            annotations[IMAGE_NAME] = str(ref)
            annotations[REF_NAME] = ref.tag or "latest"
        desc = Descriptor(
            image.top.media_type,
            image.top.digest,
            image.top.size,
            platform,
            dict(sorted(annotations.items())),
        )
        entries.append(desc.to_json())
    return go_compact({"schemaVersion": 2, "manifests": entries}).encode()


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def manifest_json(image: BuiltImage, repo_tags: list[str] | None) -> bytes:
    """``manifest.json`` of a single-platform image (what ``docker load`` reads)."""
    only = image.images[0]
    record = {
        "Config": _blob_name(only.config.digest),
        "RepoTags": repo_tags,
        "Layers": [_blob_name(d.digest) for d in only.layer_descriptors],
    }
    return go_compact([record]).encode()


def archive_entries(
    image: BuiltImage, names: Sequence[str], *, docker: bool, epoch: int | None
) -> list[ArchiveEntry]:
    """Every entry of the tarball, sorted by name, blobs read from the content store."""
    refs = [ImageReference.parse(n) for n in names]
    if docker and image.is_index:
        raise ExportError("docker exporter does not currently support exporting manifest lists")
    inline = image.inline()
    entries: dict[str, ArchiveEntry] = {
        "blobs/": ArchiveEntry("blobs/", 0o755),
        "blobs/sha256/": ArchiveEntry("blobs/sha256/", 0o755),
    }
    for desc in [*image.blobs(), image.top]:
        name = _blob_name(desc.digest)
        if desc.digest in inline:
            entries[name] = ArchiveEntry(name, 0o444, inline[desc.digest])
            continue
        if image.store is None:
            raise ExportError(f"blob {desc.digest} is not in any content store")
        path = image.store.content.path(desc.digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ExportError(f"blob {desc.digest} is missing from the content store") from None
        if size != desc.size:
            raise ExportError(f"blob {desc.digest} has {size} bytes, its descriptor {desc.size}")
        entries[name] = ArchiveEntry(name, 0o444, path=path, size=desc.size)
    created = created_stamp(epoch)
    entries["index.json"] = ArchiveEntry("index.json", 0o644, index_json(image, refs, created))
    if not image.is_index:
        tags = [familiar_name(r) for r in refs] if docker else None
        if docker and not tags:
            tags = None
        entries["manifest.json"] = ArchiveEntry("manifest.json", 0o644, manifest_json(image, tags))
    entries["oci-layout"] = ArchiveEntry("oci-layout", 0o444, OCI_LAYOUT)
    return [entries[k] for k in sorted(entries)]


def _header(entry: ArchiveEntry) -> bytes:
    info = tarfile.TarInfo(entry.name)
    info.mode = entry.mode
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    if entry.data is None and entry.path is None:
        info.type = tarfile.DIRTYPE
    else:
        info.type = tarfile.REGTYPE
        info.size = len(entry.data) if entry.data is not None else entry.size
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def archive_chunks(entries: Sequence[ArchiveEntry]) -> Iterator[bytes]:
    """The tarball as chunks (blocking reads: advance it in a thread)."""
    buf = bytearray()
    for entry in entries:
        buf += _header(entry)
        if entry.data is not None:
            buf += entry.data
            buf += bytes(-len(entry.data) % tarfile.BLOCKSIZE)
        elif entry.path is not None:
            left = entry.size
            with open(entry.path, "rb", buffering=0) as f:
                while left:
                    block = f.read(min(CHUNK, left))
                    if not block:
                        raise ExportError(f"{entry.path} shrank while being archived")
                    left -= len(block)
                    buf += block
                    if len(buf) >= CHUNK:
                        yield bytes(buf)
                        buf.clear()
                if os.fstat(f.fileno()).st_size != entry.size:
                    raise ExportError(f"blob {entry.name} does not have {entry.size} bytes")
            buf += bytes(-entry.size % tarfile.BLOCKSIZE)
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    buf += bytes(2 * tarfile.BLOCKSIZE)
    yield bytes(buf)
