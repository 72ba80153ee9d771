"""Built-in plugin registering the ``local`` and ``tar`` exporters.

Holds only hook implementations; each exporter is imported when first used. Both write on
the client side through the session's FileSend attachable: ``local`` as a directory
(``dest=DIR``), ``tar`` as one archive (``dest=FILE`` or ``dest=-`` for stdout).
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
