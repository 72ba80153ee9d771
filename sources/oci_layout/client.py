"""Client side of the content-store attachable: OCI layout directories served by name.

``bkcore build --oci-layout NAME=DIR`` serves ``DIR`` (an OCI image layout: ``oci-layout``,
``index.json``, ``blobs/<algorithm>/<hex>``) as store ``oci:NAME`` of the session's
``containerd.services.content.v1.Content`` service, as buildctl does. Only ``Info`` and
``Read`` are served (reading is all a build does with these stores). Digests are checked for
form before they become paths, so a request never leaves ``DIR/blobs``; the daemon verifies
the content itself.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from bkcore.errors import SessionError
from bkcore.session.transport import CallError, Handler, Metadata, ServerStream, Status
from bkcore.sources.oci_layout.content import (
    INFO,
    READ,
    READ_CHUNK,
    STORE_ID_HEADER,
    Info,
    InfoRequest,
    InfoResponse,
    ReadContentRequest,
    ReadContentResponse,
    Timestamp,
    check_digest,
)

__all__ = ["LayoutStores"]

STORE_PREFIX = "oci:"


class LayoutStores:
    """The ``ocistore`` attachable: OCI layouts by store name (``oci:NAME``)."""

    def __init__(self, layouts: Mapping[str, str]) -> None:
        stores: dict[str, Path] = {}
        for name, path in layouts.items():
            root = Path(path)
            if not (root / "oci-layout").is_file() or not (root / "blobs").is_dir():
                raise SessionError(
                    f"--oci-layout {name}={path}: not an OCI layout (no oci-layout file or "
                    "blobs directory)"
                )
            stores[STORE_PREFIX + name] = root
        self._stores = stores

    def __repr__(self) -> str:
        return f"LayoutStores({sorted(self._stores)!r})"

    def handlers(self) -> Mapping[str, Handler]:
        return {
            INFO: Handler("unary", self._info, InfoRequest, InfoResponse),
            READ: Handler("stream", self._read, ReadContentRequest, ReadContentResponse),
        }

    def _blob(self, metadata: Metadata, digest: str) -> Path:
        store_id = metadata.get(STORE_ID_HEADER)
        if not store_id:
            raise CallError(Status.INVALID_ARGUMENT, f"request lacks metadata {STORE_ID_HEADER}")
        root = self._stores.get(store_id)
        if root is None:
            raise CallError(Status.NOT_FOUND, f"unknown store {store_id}")
        if not check_digest(digest):
            raise CallError(Status.INVALID_ARGUMENT, f"invalid digest {digest!r}")
        algorithm, _, hexd = digest.partition(":")
        return root / "blobs" / algorithm / hexd

    async def _info(self, request: InfoRequest, metadata: Metadata) -> InfoResponse:
        path = self._blob(metadata, request.digest)
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            raise CallError(
                Status.NOT_FOUND, f"content digest {request.digest}: not found"
            ) from None
        except OSError as exc:
            raise CallError(Status.UNKNOWN, f"{request.digest}: {exc.strerror}") from None
        stamp = Timestamp(seconds=int(st.st_mtime), nanos=st.st_mtime_ns % 1_000_000_000)
        return InfoResponse(
            info=Info(digest=request.digest, size=st.st_size, created_at=stamp, updated_at=stamp)
        )

    async def _read(self, stream: ServerStream) -> None:
        request = await stream.recv()
        if not isinstance(request, ReadContentRequest):
            raise CallError(Status.INVALID_ARGUMENT, "expected one ReadContentRequest")
        path = self._blob(stream.metadata, request.digest)
        try:
            f: BinaryIO = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise CallError(
                Status.NOT_FOUND, f"content digest {request.digest}: not found"
            ) from None
        except OSError as exc:
            raise CallError(Status.UNKNOWN, f"{request.digest}: {exc.strerror}") from None
        try:
            offset = max(request.offset, 0)
            remaining = request.size if request.size > 0 else None
            await asyncio.to_thread(f.seek, offset)
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                data = await asyncio.to_thread(f.read, want)
                if not data:
                    break
                await stream.send(ReadContentResponse(offset=offset, data=data))
                offset += len(data)
                if remaining is not None:
                    remaining -= len(data)
        finally:
            await asyncio.to_thread(f.close)
