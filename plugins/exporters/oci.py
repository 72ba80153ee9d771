"""The ``oci`` exporter: an OCI image-layout tarball (``dest=FILE`` or ``-``), OCI media
types by default; ``skopeo copy oci-archive:FILE`` reads it."""

from __future__ import annotations

from bkcore.plugins.exporters.imagecommon_tarball import TarballExporter

__all__ = ["OCIExporter"]


class OCIExporter(TarballExporter):
    """:class:`bkcore.exporter.Exporter` of ``--output type=oci``."""

    docker = False
