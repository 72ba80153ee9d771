"""Built-in plugin registering the ``docker-image`` source scheme (``docker-image://REF``).

Holds only hook implementations; :mod:`bkcore.sources.image.source` is imported when the
first image source op is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_sources(registry: Registry) -> None:
    registry.add(
        "docker-image",
        "bkcore.sources.image.source:ImageSource",
        description="images pulled from OCI registries (layers shared between images)",
    )
