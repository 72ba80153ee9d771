"""The content-store session protocol (``containerd.services.content.v1.Content``, session.md
§7): its messages, the store-id metadata, and the daemon side (:class:`SessionContentStore`).

The client serves the service with request metadata ``buildkit-attachable-store-id`` naming
the store (``oci:<name>`` for ``--oci-layout NAME=DIR``). Only ``Info`` (unary) and ``Read``
(server streaming: one request, then chunks) are used. The client side serving OCI layout
directories is :mod:`bkcore.sources.oci_layout.client`.

Everything read through :class:`SessionContentStore` is verified against its digest (and the
descriptor's size) while it streams; a blob is only renamed into place once it matched.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import betterproto

from bkcore.errors import BkError, SessionError, SourceError
from bkcore.session.transport import CallError, Status

if TYPE_CHECKING:
    from bkcore.session.transport import Caller

__all__ = [
    "INFO",
    "READ",
    "STORE_ID_HEADER",
    "Info",
    "InfoRequest",
    "InfoResponse",
    "ReadContentRequest",
    "ReadContentResponse",
    "SessionContentStore",
    "Timestamp",
    "check_digest",
]

SERVICE = "/containerd.services.content.v1.Content"
INFO = f"{SERVICE}/Info"
READ = f"{SERVICE}/Read"
#: Request metadata naming the store a content call is for.
STORE_ID_HEADER = "buildkit-attachable-store-id"
#: Bytes per ``ReadContentResponse`` (containerd's content server sends 1 MiB chunks).
READ_CHUNK = 1 << 20
#: Chunks at least this big are hashed and written in a worker thread.
_THREAD_CHUNK = 64 * 1024

_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})")


def check_digest(digest: str) -> bool:
    """Whether ``digest`` is a well-formed sha256/sha384/sha512 digest (safe as a path)."""
    return _DIGEST.fullmatch(digest) is not None


@dataclass(eq=False, repr=False)
class Timestamp(betterproto.Message):
    """``google.protobuf.Timestamp``."""

    seconds: int = betterproto.int64_field(1)
    nanos: int = betterproto.int32_field(2)


@dataclass(eq=False, repr=False)
class Info(betterproto.Message):
    digest: str = betterproto.string_field(1)
    size: int = betterproto.int64_field(2)
    created_at: Timestamp = betterproto.message_field(3)  # noqa: RUF009
    updated_at: Timestamp = betterproto.message_field(4)  # noqa: RUF009
    labels: dict[str, str] = betterproto.map_field(  # noqa: RUF009
        5, betterproto.TYPE_STRING, betterproto.TYPE_STRING
    )


@dataclass(eq=False, repr=False)
class InfoRequest(betterproto.Message):
    digest: str = betterproto.string_field(1)


@dataclass(eq=False, repr=False)
class InfoResponse(betterproto.Message):
    info: Info = betterproto.message_field(1)  # noqa: RUF009


@dataclass(eq=False, repr=False)
class ReadContentRequest(betterproto.Message):
    digest: str = betterproto.string_field(1)
    offset: int = betterproto.int64_field(2)
    size: int = betterproto.int64_field(3)


@dataclass(eq=False, repr=False)
class ReadContentResponse(betterproto.Message):
    offset: int = betterproto.int64_field(1)
    data: bytes = betterproto.bytes_field(2)

    def __repr__(self) -> str:
        return f"ReadContentResponse(offset={self.offset}, <{len(self.data)} bytes>)"


class SessionContentStore:
    """The daemon's view of one client store (``store_id`` like ``oci:NAME``) over a session.

    ``label`` names the source in errors (``oci-layout://...``). Failures are
    :class:`SourceError`, except a session that cannot serve the store at all
    (:class:`SessionError`, so a session group moves on to its next session).
    """

    def __init__(self, caller: Caller, store_id: str, label: str) -> None:
        self.caller = caller
        self.store_id = store_id
        self.label = label

    @property
    def _metadata(self) -> list[tuple[str, str]]:
        return [(STORE_ID_HEADER, self.store_id)]

    def _call_error(self, exc: CallError, digest: str) -> BkError:
        if exc.code == Status.NOT_FOUND and "unknown store" in exc.message:
            return SessionError(f"{self.label}: the client has no store {self.store_id!r}")
        if exc.code == Status.UNIMPLEMENTED:
            return SessionError(f"{self.label}: the client serves no content store")
        if exc.code == Status.NOT_FOUND:
            return SourceError(f"{self.label}: {digest} not found in store {self.store_id!r}")
        return SourceError(f"{self.label}: reading {digest} from the client failed: {exc.message}")

    async def info(self, digest: str) -> int:
        """The size of blob ``digest`` in the store."""
        if not check_digest(digest):
            raise SourceError(f"{self.label}: malformed digest {digest!r}")
        try:
            resp = await self.caller.call_unary(
                INFO, InfoRequest(digest=digest), InfoResponse, self._metadata
            )
        except CallError as exc:
            raise self._call_error(exc, digest) from None
        if resp.info.digest and resp.info.digest != digest:
            raise SourceError(f"{self.label}: the client answered Info for {resp.info.digest}")
        return int(resp.info.size)

    async def _stream(
        self,
        digest: str,
        size: int,
        sink: Callable[[bytes], object],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Read ``digest`` (exactly ``size`` bytes), feed ``sink`` in order, verify the digest.

        Big chunks are hashed and sunk in a worker thread, small ones in line."""
        import hashlib

        hasher = hashlib.new(digest.split(":", 1)[0])
        received = 0

        def take(data: bytes) -> None:
            hasher.update(data)
            sink(data)

        try:
            async with self.caller.open_stream(READ, ReadContentResponse, self._metadata) as call:
                await call.send(ReadContentRequest(digest=digest))
                await call.end()
                while True:
                    msg = await call.recv()
                    if msg is None:
                        break
                    data = bytes(msg.data)
                    if msg.offset != received:
                        raise SourceError(
                            f"{self.label}: {digest}: chunk at offset {msg.offset}, "
                            f"expected {received}"
                        )
                    received += len(data)
                    if received > size:
                        raise SourceError(
                            f"{self.label}: blob {digest} is larger than its {size} bytes"
                        )
                    if len(data) >= _THREAD_CHUNK:
                        await asyncio.to_thread(take, data)
                    else:
                        take(data)
                    if progress is not None:
                        progress(received)
        except CallError as exc:
            raise self._call_error(exc, digest) from None
        actual = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
        if received != size:
            raise SourceError(f"{self.label}: blob {digest} has {received} bytes, expected {size}")
        if actual != digest:
            raise SourceError(
                f"{self.label}: blob digest mismatch: expected {digest}, got {actual}"
            )

    async def read_bytes(self, digest: str, size: int | None, max_size: int) -> bytes:
        """The whole blob ``digest`` (``size`` from its descriptor, else from ``Info``),
        refused above ``max_size``; verified."""
        if not check_digest(digest):
            raise SourceError(f"{self.label}: malformed digest {digest!r}")
        if size is None:
            size = await self.info(digest)
        if size > max_size:
            raise SourceError(f"{self.label}: {digest} is {size} bytes (limit {max_size})")
        parts: list[bytes] = []
        await self._stream(digest, size, parts.append)
        return b"".join(parts)

    async def fetch_blob(
        self,
        digest: str,
        dest: Path,
        size: int | None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream blob ``digest`` into ``dest`` verified (a
        :class:`bkcore.layers.pull.BlobFetcher`); nothing is left on failure."""
        if not check_digest(digest):
            raise SourceError(f"{self.label}: malformed digest {digest!r}")
        if size is None:
            size = await self.info(digest)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.partial")
        try:
            out = await asyncio.to_thread(open, tmp, "wb")
            try:
                await self._stream(digest, size, out.write, progress)
            finally:
                await asyncio.to_thread(out.close)
            await asyncio.to_thread(os.replace, tmp, dest)
            return size
        finally:
            await asyncio.to_thread(tmp.unlink, True)
