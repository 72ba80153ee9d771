"""Built-in plugin registering the ``local``, ``tar``, ``image``, ``oci`` and ``docker``
exporters.

Holds only hook implementations; each exporter is imported when first used. Both write on
the client side through the session's FileSend attachable: ``local`` as a directory
(``dest=DIR``), ``tar`` as one archive (``dest=FILE`` or ``dest=-`` for stdout); ``oci`` and
``docker`` write image tarballs the same way; ``image`` writes into the content store and
pushes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_exporters(registry: Registry) -> None:
    registry.add(
        "local",
        "bkcore.plugins.exporters.local:LocalExporter",
        description="write the result's files into a client directory (dest=DIR)",
    )
    registry.add(
        "tar",
        "bkcore.plugins.exporters.tar:TarExporter",
        description="write the result's files as a tarball (dest=FILE, or - for stdout)",
    )
    registry.add(
        "image",
        "bkcore.plugins.exporters.image:ImageExporter",
        description="the result as an image in the content store; push=true pushes name=",
    )
    registry.add(
        "oci",
        "bkcore.plugins.exporters.oci:OCIExporter",
        description="the result as an OCI image-layout tarball (dest=FILE, or - for stdout)",
    )
    registry.add(
        "docker",
        "bkcore.plugins.exporters.docker:DockerExporter",
        description="the result as a tarball for docker load (dest=FILE, or - for stdout)",
    )
