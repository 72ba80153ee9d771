"""The ``docker`` exporter: a tarball ``docker load`` accepts (``dest=FILE`` or ``-``),
Docker media types, ``RepoTags`` from ``name=``; single platform only."""

from __future__ import annotations

from bkcore.plugins.exporters.imagecommon_tarball import TarballExporter

__all__ = ["DockerExporter"]


class DockerExporter(TarballExporter):
    """:class:`bkcore.exporter.Exporter` of ``--output type=docker``."""

    docker = True
