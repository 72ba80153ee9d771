"""Built-in plugin registering the ``dockerfile.v0`` frontend.

Holds only the hook implementation; :mod:`bkcore.frontends.dockerfile.frontend` is imported
when a build first uses the frontend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_frontends(registry: Registry) -> None:
    registry.add(
        "dockerfile.v0",
        "bkcore.frontends.dockerfile.frontend:DockerfileFrontend",
        description="Dockerfiles (BuildKit v0.11 dockerfile.v0 frontend)",
    )
