"""The ``image`` exporter: the result as an image in the content store, optionally pushed.

Attrs (buildctl's ``--output type=image,...``): ``name=a,b`` (several names), ``push=true``,
``push-by-digest=true``, ``registry.insecure=true``, ``compression=gzip|zstd|uncompressed``,
``compression-level``, ``force-compression``, ``oci-mediatypes``, ``buildinfo``,
``annotation*``, ``source-date-epoch``. Layers, config and manifest are written to the
content store (spec/exporters.md §2); with ``push`` every name is pushed (§4). The response
carries ``containerimage.digest``, ``containerimage.config.digest``,
``containerimage.descriptor``, ``image.name`` and ``containerimage.buildinfo``.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING

from bkcore.errors import ExportError
from bkcore.plugins.exporters.common import exporting
from bkcore.plugins.exporters.imagecommon import (
    META_BUILDINFO,
    BuiltImage,
    build_image,
    descriptor_b64,
    parse_bool,
    parse_options,
)

if TYPE_CHECKING:
    from bkcore.exporter import ExportContext
    from bkcore.plugins.exporters.common import ExportVertex
    from bkcore.registry_client import CredentialsCallback
    from bkcore.solver.types import Result

__all__ = ["VERTEX_NAME", "ImageExporter", "built_with_statuses", "response"]

#: The vertex of an image export (BuildKit's name); pushes show as statuses inside it.
VERTEX_NAME = "exporting to image"


def response(
    ctx: ExportContext, image: object, names: list[str], buildinfo: bool
) -> dict[str, str]:
    from bkcore.registry_client import Descriptor

    assert isinstance(image, BuiltImage)
    top = image.top
    if not image.is_index:  # a single manifest's descriptor carries its platform (BuildKit)
        top = Descriptor(top.media_type, top.digest, top.size, image.images[0].descriptor.platform)
    out = {
        "containerimage.digest": image.top.digest,
        "containerimage.descriptor": descriptor_b64(top),
    }
    if not image.is_index:
        out["containerimage.config.digest"] = image.images[0].config.digest
    if names:
        out["image.name"] = ",".join(names)
    if buildinfo:
        info = ctx.metadata.get(META_BUILDINFO, b"{}")
        out["containerimage.buildinfo"] = base64.b64encode(info).decode()
    return out


def _session_credentials(ctx: ExportContext) -> CredentialsCallback | None:
    """Registry credentials from the client session's Auth service (None: anonymous)."""
    caller = ctx.caller
    if caller is None:
        return None

    async def credentials(host: str) -> tuple[str, str] | None:
        from bkcore.session.auth import get_credentials

        return await get_credentials(caller, host)

    return credentials


class ImageExporter:
    """:class:`bkcore.exporter.Exporter` of ``--output type=image``."""

    async def export(
        self, ctx: ExportContext, result: Result | None, attrs: Mapping[str, str]
    ) -> Mapping[str, str]:
        from bkcore.plugins.exporters.imagecommon_push import parse_push_name, push_image

        opts = parse_options(attrs, ctx.metadata, oci_default=False)
        push = parse_bool(attrs, "push")
        by_digest = parse_bool(attrs, "push-by-digest")
        insecure = parse_bool(attrs, "registry.insecure")
        if push and not opts.names:
            raise ExportError("output type=image: push=true needs name=NAME")
        targets = [parse_push_name(n, by_digest=by_digest) for n in opts.names] if push else []
        async with exporting(ctx.progress, VERTEX_NAME) as vertex:
            image = await built_with_statuses(vertex, build_image(ctx, result, opts))
            credentials = _session_credentials(ctx)
            for ref in targets:
                await push_image(
                    image, ref, insecure=insecure, credentials=credentials, step=vertex.step
                )
        return response(ctx, image, opts.names, opts.buildinfo)


async def built_with_statuses(vertex: ExportVertex, building: Awaitable[BuiltImage]) -> BuiltImage:
    """Await ``building`` inside BuildKit's statuses of the "exporting to image" vertex:
    ``exporting layers`` while the image is made, then ``exporting manifest sha256:..`` and
    ``exporting config sha256:..`` per platform and ``exporting manifest list sha256:..`` for
    an index. (The manifest and config blobs are written with the layers, in one thread per
    platform; their statuses are shown complete when that work is done.)"""
    async with vertex.step("exporting layers"):
        image = await building
    for part in image.images:
        async with vertex.step(f"exporting manifest {part.descriptor.digest}"):
            pass
        async with vertex.step(f"exporting config {part.config.digest}"):
            pass
    if image.is_index:
        async with vertex.step(f"exporting manifest list {image.top.digest}"):
            pass
    return image
