"""Async OCI distribution client: manifests, blobs, platform selection and push primitives."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx

from bkcore.errors import SourceError
from bkcore.llb.platforms import Platform
from bkcore.registry_client import mediatypes as mt
from bkcore.registry_client.auth import CredentialsCallback, scope_for
from bkcore.registry_client.digests import check_digest, digest_of, new_hasher
from bkcore.registry_client.platforms import select_manifest
from bkcore.registry_client.reference import ImageReference
from bkcore.registry_client.transport import (
    AuthState,
    Connections,
    HostOptions,
    RetryPolicy,
    Transport,
)

#: Manifests bigger than this are refused (the distribution spec suggests 4 MiB).
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
_WRITE_BATCH = 1 << 20
_READ_CHUNK = 1 << 20

PushOutcome = Literal["exists", "mounted", "uploaded"]


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest}
        out["size"] = self.size
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            plat = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                plat["variant"] = self.platform.variant
            out["platform"] = plat
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest or index exactly as the registry sent it (``data`` hashes to the digest)."""

    ref: ImageReference
    media_type: str
    digest: str
    data: bytes

    @property
    def json(self) -> dict[str, Any]:
        value = json.loads(self.data)
        if not isinstance(value, dict):
            raise SourceError(f"{self.ref}: manifest is not a JSON object")
        return value

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEX_TYPES

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))


def _media_type(resp: httpx.Response, data: bytes | None) -> str:
    ctype = str(resp.headers.get("Content-Type", "")).split(";", 1)[0].strip()
    if ctype in mt.INDEX_TYPES or ctype in mt.MANIFEST_TYPES:
        return ctype
    if data:
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if isinstance(body, dict):
            if isinstance(body.get("mediaType"), str):
                return str(body["mediaType"])
            return mt.OCI_INDEX if "manifests" in body else mt.OCI_MANIFEST
    return ctype


class RegistryClient:
    """Talks to OCI registries; use as ``async with RegistryClient(...) as client``.

    ``credentials`` is called with the registry host as dialled (``registry-1.docker.io``
    for Docker Hub, ``127.0.0.1:5000``) and returns ``(user, secret)`` or None (an empty
    user with a secret is an identity token); ``hosts`` maps ``host[:port]`` to
    HostOptions. A client made with ``connections=`` shares them (and their httpx clients)
    and does not close them; :meth:`with_auth` makes such a client for another session.
    """

    def __init__(
        self,
        credentials: CredentialsCallback | None = None,
        hosts: Mapping[str, HostOptions] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        *,
        connections: Connections | None = None,
        auth: AuthState | None = None,
    ) -> None:
        self._t = Transport(credentials, hosts, retry, timeout, connections=connections, auth=auth)

    @property
    def connections(self) -> Connections:
        return self._t.conn

    def with_auth(self, auth: AuthState) -> RegistryClient:
        """A client sharing this one's connections, authenticating with ``auth``.

        Closing it leaves the shared connections open (their owner closes them).
        """
        return RegistryClient(connections=self._t.conn, auth=auth)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._t.aclose()

    def _url(self, ref: ImageReference, kind: str, obj: str = "") -> str:
        return f"{self._t.base_url(ref.endpoint_host)}/v2/{ref.repository}/{kind}/{obj}"

    @staticmethod
    async def _fail(ref: ImageReference, resp: httpx.Response, what: str) -> SourceError:
        body = b""
        if resp.status_code == 400 and resp.request.url.scheme == "http":
            try:  # a TLS-only server answering plain HTTP says so in a short body
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > 4096:
                        break
            except httpx.HTTPError:
                pass
        await resp.aclose()
        if b"HTTP request to an HTTPS server" in body:
            host = resp.request.url.netloc.decode()
            return SourceError(
                f"{ref}: {host} speaks HTTPS, not plain HTTP (loopback registries default to "
                f'HTTP: set http = false under [registry."{host}"] in the registry config)'
            )
        if resp.status_code == 404:
            return SourceError(f"{ref}: {what} not found")
        if resp.status_code == 403:
            return SourceError(f"{ref}: access to {what} denied (403 Forbidden)")
        return SourceError(f"{ref}: {what}: registry answered {resp.status_code}")

    # -- manifests ------------------------------------------------------------------------
    async def resolve(self, ref: ImageReference) -> Descriptor:
        """Resolve a tag (or digest) to the descriptor of its manifest: HEAD, then GET."""
        url = self._url(ref, "manifests", ref.object)
        headers = {"Accept": mt.MANIFEST_ACCEPT}
        resp = await self._t.request(ref, "HEAD", url, headers=headers)
        await resp.aclose()
        digest = resp.headers.get("Docker-Content-Digest", "")
        length = resp.headers.get("Content-Length", "")
        ctype = _media_type(resp, None)
        if (
            resp.status_code == 200
            and digest
            and length.isdigit()
            and (ctype in mt.INDEX_TYPES or ctype in mt.MANIFEST_TYPES)
            and (ref.digest is None or digest == ref.digest)
        ):
            return Descriptor(ctype, check_digest(digest, str(ref)), int(length))
        return (await self.fetch_manifest(ref)).descriptor

    async def fetch_manifest(self, ref: ImageReference) -> Manifest:
        """GET the manifest ``ref`` names; by digest it must hash to that digest."""
        url = self._url(ref, "manifests", ref.object)
        resp, body = await self._get_small(
            ref, url, {"Accept": mt.MANIFEST_ACCEPT}, MAX_MANIFEST_SIZE, "manifest"
        )
        if ref.digest is not None:
            expected = check_digest(ref.digest, str(ref))
            actual = digest_of(body, expected.split(":", 1)[0])
        else:
            header = resp.headers.get("Docker-Content-Digest", "")
            algorithm = header.split(":", 1)[0] if header.startswith("sha512:") else "sha256"
            actual = digest_of(body, algorithm)
            expected = header or actual
        if actual != expected:
            raise SourceError(f"{ref}: manifest digest mismatch: expected {expected}, got {actual}")
        return Manifest(ref.with_digest(actual), _media_type(resp, body), actual, body)

    async def fetch_image_manifest(self, ref: ImageReference, platform: Platform) -> Manifest:
        """The image manifest of ``ref`` for ``platform``, following an index if there is one."""
        manifest = await self.fetch_manifest(ref)
        if not manifest.is_index:
            return manifest
        entries = manifest.json.get("manifests")
        if not isinstance(entries, list):
            raise SourceError(f"{ref}: index has no manifests list")
        chosen = select_manifest(entries, platform, str(ref))
        digest = check_digest(str(chosen.get("digest", "")), str(ref))
        child = await self.fetch_manifest(ref.with_digest(digest))
        if child.is_index:
            raise SourceError(f"{ref}: nested index {digest} is not supported")
        return child

    async def put_manifest(
        self, ref: ImageReference, data: bytes, media_type: str, tag: str | None = None
    ) -> str:
        """PUT a manifest under ``tag`` (default: the ref's tag, else its digest)."""
        digest = digest_of(data)
        target = tag or ref.tag or digest
        url = self._url(ref, "manifests", target)
        resp = await self._t.request(
            ref, "PUT", url, actions="pull,push", headers={"Content-Type": media_type}, body=data
        )
        if resp.status_code not in (200, 201):
            raise await self._fail(ref, resp, f"manifest upload ({media_type})")
        await resp.aclose()
        sent = resp.headers.get("Docker-Content-Digest")
        if sent and sent != digest:
            raise SourceError(f"{ref}: registry stored manifest as {sent}, expected {digest}")
        return digest

    # -- blobs in -------------------------------------------------------------------------
    async def fetch_blob_bytes(self, ref: ImageReference, digest: str, max_size: int) -> bytes:
        """A small blob (an image config) in memory, verified against ``digest``."""
        check_digest(digest, str(ref))
        url = self._url(ref, "blobs", digest)
        _, data = await self._get_small(ref, url, {}, max_size, f"blob {digest}")
        actual = digest_of(data, digest.split(":", 1)[0])
        if actual != digest:
            raise SourceError(f"{ref}: blob digest mismatch: expected {digest}, got {actual}")
        return data

    async def _get_small(
        self, ref: ImageReference, url: str, headers: Mapping[str, str], limit: int, what: str
    ) -> tuple[httpx.Response, bytes]:
        """GET a body of at most ``limit`` bytes; a connection lost mid-body is retried."""
        attempt = 0
        while True:
            resp = await self._t.request(ref, "GET", url, headers=headers)
            if resp.status_code != 200:
                raise await self._fail(ref, resp, what)
            data = bytearray()
            try:
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise SourceError(f"{ref}: {what} larger than {limit} bytes")
                return resp, bytes(data)
            except httpx.TransportError as exc:
                attempt += 1
                if attempt >= self._t.retry.attempts:
                    raise SourceError(f"{ref}: reading {what} failed: {exc}") from exc
            finally:
                await resp.aclose()
            await asyncio.sleep(self._t.retry.delay(attempt - 1))

    async def fetch_blob(
        self,
        ref: ImageReference,
        digest: str,
        dest: Path,
        size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream blob ``digest`` into ``dest``, verified while streaming; return its size.

        The blob lands in a temporary file beside ``dest`` and is renamed into place only when
        digest (and ``size``, if given) match; on any failure nothing is left behind.
        Connection errors mid-stream restart the download (bounded by the retry policy).
        ``progress`` is called with the bytes received so far (it restarts from 0 on a retry).
        """
        check_digest(digest, str(ref))
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.partial")
        try:
            attempt = 0
            while True:
                try:
                    written = await self._download(ref, digest, tmp, size, progress)
                    break
                except httpx.TransportError as exc:
                    attempt += 1
                    if attempt >= self._t.retry.attempts:
                        raise SourceError(
                            f"{ref}: download of blob {digest} failed: {type(exc).__name__}: {exc}"
                        ) from exc
                    await asyncio.sleep(self._t.retry.delay(attempt - 1))
            await asyncio.to_thread(os.replace, tmp, dest)
            return written
        finally:
            await asyncio.to_thread(tmp.unlink, True)

    async def _download(
        self,
        ref: ImageReference,
        digest: str,
        tmp: Path,
        size: int | None,
        progress: Callable[[int], None] | None,
    ) -> int:
        resp = await self._t.request(ref, "GET", self._url(ref, "blobs", digest))
        if resp.status_code != 200:
            raise await self._fail(ref, resp, f"blob {digest}")
        hasher = new_hasher(digest)
        written = 0
        try:
            with open(tmp, "wb") as out:  # written to in a thread (flush)

                def flush(batch: bytes) -> None:
                    hasher.update(batch)
                    out.write(batch)

                pending: list[bytes] = []
                pending_len = 0
                async for chunk in resp.aiter_bytes():
                    written += len(chunk)
                    if size is not None and written > size:
                        raise SourceError(
                            f"{ref}: blob {digest} is larger than its descriptor's {size} bytes"
                        )
                    pending.append(chunk)
                    pending_len += len(chunk)
                    if pending_len >= _WRITE_BATCH:
                        await asyncio.to_thread(flush, b"".join(pending))
                        pending, pending_len = [], 0
                        if progress is not None:
                            progress(written)
                if pending:
                    await asyncio.to_thread(flush, b"".join(pending))
                if progress is not None:
                    progress(written)
        finally:
            await resp.aclose()
        actual = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
        if actual != digest:
            raise SourceError(f"{ref}: blob digest mismatch: expected {digest}, got {actual}")
        if size is not None and written != size:
            raise SourceError(f"{ref}: blob {digest} has {written} bytes, descriptor says {size}")
        return written

    # -- blobs out ------------------------------------------------------------------------
    async def blob_exists(self, ref: ImageReference, digest: str) -> bool:
        """HEAD the blob: True when the repository already has it."""
        check_digest(digest, str(ref))
        resp = await self._t.request(ref, "HEAD", self._url(ref, "blobs", digest))
        await resp.aclose()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise await self._fail(ref, resp, f"blob {digest}")

    async def _start_upload(
        self, ref: ImageReference, query: str = "", extra_scopes: Sequence[str] = ()
    ) -> httpx.Response:
        url = self._url(ref, "blobs", "uploads/") + query
        return await self._t.request(
            ref,
            "POST",
            url,
            actions="pull,push",
            headers={"Content-Length": "0"},
            extra_scopes=extra_scopes,
        )

    @staticmethod
    def _location(resp: httpx.Response, ref: ImageReference) -> httpx.URL:
        location = resp.headers.get("Location")
        if not location:
            raise SourceError(f"{ref}: registry sent no upload location")
        return resp.request.url.join(location)

    async def mount_blob(self, ref: ImageReference, digest: str, from_repository: str) -> bool:
        """Try a cross-repository mount; True when the registry mounted the blob."""
        check_digest(digest, str(ref))
        query = f"?mount={quote(digest)}&from={quote(from_repository)}"
        resp = await self._start_upload(ref, query, (scope_for(from_repository, "pull"),))
        await resp.aclose()
        if resp.status_code == 201:
            return True
        if resp.status_code == 202:
            await self._cancel_upload(ref, self._location(resp, ref))
            return False
        raise await self._fail(ref, resp, f"mount of blob {digest}")

    async def _cancel_upload(self, ref: ImageReference, location: httpx.URL) -> None:
        resp = await self._t.request(ref, "DELETE", str(location), actions="pull,push")
        await resp.aclose()

    async def push_blob(
        self,
        ref: ImageReference,
        digest: str,
        source: Path,
        *,
        mount_from: str | None = None,
        chunk_size: int | None = None,
    ) -> PushOutcome:
        """Make the repository hold blob ``digest`` (the file ``source``), doing least work.

        HEAD first; then a cross-repository mount from ``mount_from`` if given; else an upload:
        monolithic (POST + PUT) by default, chunked PATCHes of ``chunk_size`` bytes if set.
        """
        if await self.blob_exists(ref, digest):
            return "exists"
        if mount_from and mount_from != ref.repository:
            if await self.mount_blob(ref, digest, mount_from):
                return "mounted"
        size = (await asyncio.to_thread(source.stat)).st_size
        resp = await self._start_upload(ref)
        await resp.aclose()
        if resp.status_code != 202:
            raise await self._fail(ref, resp, "blob upload start")
        location = self._location(resp, ref)
        offset = 0
        if chunk_size is not None and chunk_size > 0:
            while offset < size:
                length = min(chunk_size, size - offset)
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(length),
                    "Content-Range": f"{offset}-{offset + length - 1}",
                }
                resp = await self._t.request(
                    ref,
                    "PATCH",
                    str(location),
                    actions="pull,push",
                    headers=headers,
                    body=_file_body(source, offset, length),
                )
                await resp.aclose()
                if resp.status_code != 202:
                    raise await self._fail(ref, resp, f"chunk upload of blob {digest}")
                location = self._location(resp, ref)
                offset += length
        final = location.copy_merge_params({"digest": digest})
        remaining = size - offset
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(remaining)}
        resp = await self._t.request(
            ref,
            "PUT",
            str(final),
            actions="pull,push",
            headers=headers,
            body=_file_body(source, offset, remaining) if remaining else b"",
        )
        await resp.aclose()
        if resp.status_code not in (201, 204):
            raise await self._fail(ref, resp, f"upload of blob {digest}")
        stored = resp.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise SourceError(f"{ref}: registry stored blob as {stored}, expected {digest}")
        return "uploaded"


def _file_body(path: Path, offset: int, length: int) -> Any:
    """A factory of async byte streams over ``path[offset:offset+length]`` (fresh per retry)."""

    async def stream() -> AsyncIterator[bytes]:
        fh = await asyncio.to_thread(open, path, "rb")
        try:
            await asyncio.to_thread(fh.seek, offset)
            left = length
            while left > 0:
                chunk = await asyncio.to_thread(fh.read, min(_READ_CHUNK, left))
                if not chunk:
                    raise SourceError(f"{path} shrank while it was being uploaded")
                left -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(fh.close)

    return stream
