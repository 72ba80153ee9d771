"""The ``oci`` and ``docker`` exporters: an image as a tarball written on the client.

The image is assembled in the content store first (:func:`.imagecommon.build_image`), then
the tarball (:mod:`.imagecommon_archive`) is streamed to the client's FileSend target, which
writes ``dest=FILE`` through a temporary file renamed at the end (``dest=-``: stdout), so a
failed export leaves no file. ``oci`` uses OCI media types by default, ``docker`` Docker's
and fills ``RepoTags`` for ``docker load``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bkcore.errors import ExportError, SessionError
from bkcore.plugins.exporters.common import as_export_error, client_of, exporting
from bkcore.plugins.exporters.imagecommon import (
    META_BUILDINFO,
    build_image,
    descriptor_b64,
    parse_options,
)
from bkcore.plugins.exporters.imagecommon_archive import (
    CREATED,
    archive_chunks,
    archive_entries,
    created_stamp,
)
from bkcore.registry_client import ImageReference

if TYPE_CHECKING:
    from bkcore.exporter import ExportContext
    from bkcore.solver.types import Result

__all__ = ["TarballExporter"]


class TarballExporter:
    """Shared body of the ``oci`` (``docker=False``) and ``docker`` exporters."""

    docker = False

    async def export(
        self, ctx: ExportContext, result: Result | None, attrs: Mapping[str, str]
    ) -> Mapping[str, str]:
        from bkcore.plugins.exporters.image import built_with_statuses
        from bkcore.plugins.exporters.tar import _in_thread
        from bkcore.session.filesync import send_file_to_client

        kind = "docker" if self.docker else "oci"
        opts = parse_options(attrs, ctx.metadata, oci_default=not self.docker)
        try:
            refs = [ImageReference.parse(n) for n in opts.names]
        except Exception as exc:
            raise ExportError(f"output type={kind}: invalid name: {exc}") from None
        caller = client_of(ctx, f"output type={kind}")
        # BuildKit's one vertex "exporting to docker|oci image format": the image's statuses
        # (exporting layers, manifest, config), then "sending tarball"
        async with exporting(ctx.progress, f"exporting to {kind} image format") as vertex:
            image = await built_with_statuses(vertex, build_image(ctx, result, opts))
            entries = archive_entries(image, opts.names, docker=self.docker, epoch=opts.epoch)
            name = "sending tarball"
            chunks = _in_thread(iter(archive_chunks(entries)))
            try:
                async with vertex.step(name):
                    await send_file_to_client(caller, chunks)
            except (SessionError, OSError) as exc:
                raise as_export_error(name, exc) from exc
            finally:
                await chunks.aclose()
        extra = {CREATED: created_stamp(opts.epoch)}
        plat = None if image.is_index else image.images[0].descriptor.platform
        top = image.top
        if plat is not None:
            from bkcore.registry_client import Descriptor

            top = Descriptor(top.media_type, top.digest, top.size, plat)
        out = {
            "containerimage.digest": image.top.digest,
            "containerimage.descriptor": descriptor_b64(top, extra),
        }
        if not image.is_index:
            out["containerimage.config.digest"] = image.images[0].config.digest
        if refs:
            out["image.name"] = ",".join(str(r) for r in refs)
        if opts.buildinfo:
            info = ctx.metadata.get(META_BUILDINFO, b"{}")
            out["containerimage.buildinfo"] = base64.b64encode(info).decode()
        return out
