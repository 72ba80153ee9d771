"""Built-in plugin registering the ``oci-layout`` source scheme and the ``ocistore``
attachable (``--oci-layout NAME=DIR``).

Holds only hook implementations; the source and the client store are imported when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_sources(registry: Registry) -> None:
    registry.add(
        "oci-layout",
        "bkcore.sources.oci_layout.source:OCILayoutSource",
        description="images read from an OCI layout on the client (--oci-layout NAME=DIR)",
    )


@hookimpl
def bkcore_register_attachables(registry: Registry) -> None:
    registry.add(
        "ocistore",
        "bkcore.sources.oci_layout.client:LayoutStores",
        description="serve OCI layout directories as content stores (--oci-layout NAME=DIR)",
    )
