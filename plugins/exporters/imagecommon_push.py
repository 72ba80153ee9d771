"""Pushing a built image to a registry the way BuildKit v0.11.6 does (spec/exporters.md §4).

Every blob (layers and configs) is pushed concurrently: a ``HEAD`` first (present: skipped),
then a cross-repository mount when the blob is known to be in another repository of the same
registry, else one monolithic upload (``POST`` + ``PUT``). Manifests go last, children
before the index, so a failed push never leaves the tag pointing at a partial image; the tag
is not re-sent when the registry already resolves it to the same digest.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path

from bkcore.errors import BkError, ExportError, SessionError, SourceError
from bkcore.plugins.exporters.imagecommon import BuiltImage
from bkcore.registry_client import (
    CredentialsCallback,
    HostOptions,
    ImageReference,
    RegistryClient,
    load_hosts,
)

__all__ = ["parse_push_name", "push_image"]


def parse_push_name(name: str, *, by_digest: bool) -> ImageReference:
    """The reference to push ``name`` to (``push-by-digest`` refuses a tag)."""
    try:
        ref = ImageReference.parse(name)
    except BkError as exc:
        raise ExportError(f"invalid image name {name!r}: {exc}") from None
    if ref.digest is not None:
        raise ExportError(f"cannot push to {name!r}: the name has a digest")
    if by_digest:
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            raise ExportError(f"push-by-digest: {name!r} must not have a tag")
        ref = ref.with_tag(None)
    return ref


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


async def _push_blobs(
    client: RegistryClient,
    ref: ImageReference,
    image: BuiltImage,
    sources: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """Push every blob below the manifests; returns digest -> outcome."""
    blobs = [d for d in image.blobs() if d.media_type not in _MANIFEST_TYPES]
    inline = image.inline()
    outcomes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bkcore-push-") as tmp:

        def path_of(digest: str) -> Path:
            if image.store is not None and image.store.content.has(digest):
                return image.store.content.path(digest)
            if digest not in inline:
                raise ExportError(f"blob {digest} is not in any content store")
            path = Path(tmp) / digest.replace(":", "-")
            path.write_bytes(inline[digest])
            return path

        async def one(digest: str) -> None:
            known = sources.get(digest, {})
            mount_from = known.get(ref.domain)
            source = await asyncio.to_thread(path_of, digest)
            outcomes[digest] = await client.push_blob(ref, digest, source, mount_from=mount_from)

        try:
            async with asyncio.TaskGroup() as tg:
                for desc in blobs:
                    tg.create_task(one(desc.digest))
        except BaseExceptionGroup as eg:
            raise _first_error(eg) from None
    return outcomes


async def _tag_matches(client: RegistryClient, ref: ImageReference, digest: str) -> bool:
    try:
        found = await client.resolve(ref)
    except SourceError:
        return False
    return found.digest == digest


def _client(
    ref: ImageReference, insecure: bool, credentials: CredentialsCallback | None
) -> RegistryClient:
    """A client with the hosts config (``registries.toml``); ``registry.insecure`` makes
    ``ref``'s host plain HTTP without TLS verification."""
    hosts = load_hosts()
    if insecure:
        known = hosts.get(ref.endpoint_host, HostOptions())
        hosts[ref.endpoint_host] = replace(known, http=True, insecure=True)
    return RegistryClient(credentials=credentials, hosts=hosts)


async def push_image(
    image: BuiltImage,
    ref: ImageReference,
    *,
    insecure: bool = False,
    credentials: CredentialsCallback | None = None,
    step: Callable[[str], AbstractAsyncContextManager[None]] | None = None,
) -> dict[str, str]:
    """Push ``image`` to ``ref`` (tagged, or by digest when ``ref`` has no tag).

    ``credentials`` answers a registry's challenge (the client session's Auth service).
    ``step(name)`` frames the two phases as BuildKit's progress statuses: ``pushing layers``
    and ``pushing manifest for NAME:TAG@DIGEST`` (``NAME`` alone when pushed by digest).
    Returns digest -> ``exists``/``mounted``/``uploaded`` of the blobs. Errors are one
    :class:`ExportError` line naming the reference."""
    from bkcore.layers.blobcache import LayerBlobCache

    cache = LayerBlobCache(image.store.content) if image.store is not None else None
    phase = step if step is not None else _no_step
    manifests = (
        f"pushing manifest for {ref}@{image.top.digest}"
        if ref.tag
        else f"pushing manifest for {ref}"
    )
    try:
        async with _client(ref, insecure, credentials) as client:
            async with phase("pushing layers"):
                outcomes = await _push_blobs(client, ref, image, image.layer_sources())
            if cache is not None:
                for layer in (x for part in image.images for x in part.layers):
                    await asyncio.to_thread(
                        cache.add_source, layer.digest, ref.domain, ref.repository
                    )
            async with phase(manifests):
                await _push_manifests(client, ref, image)
    except (SourceError, SessionError) as exc:
        raise ExportError(f"push failed: {exc}") from exc
    except OSError as exc:
        raise ExportError(f"push to {ref} failed: {exc}") from exc
    return outcomes


@asynccontextmanager
async def _no_step(name: str) -> AsyncIterator[None]:
    yield


async def _push_manifests(client: RegistryClient, ref: ImageReference, image: BuiltImage) -> None:
    """Children before the index, the tag last (not re-sent when it already matches)."""
    if image.is_index:
        for child in image.images:
            await client.put_manifest(
                ref, child.manifest, child.descriptor.media_type, child.descriptor.digest
            )
    tag = ref.tag
    if tag is None:
        await client.put_manifest(ref, image.top_bytes, image.top.media_type, image.top.digest)
    elif not await _tag_matches(client, ref, image.top.digest):
        await client.put_manifest(ref, image.top_bytes, image.top.media_type, tag)


_MANIFEST_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    }
)
