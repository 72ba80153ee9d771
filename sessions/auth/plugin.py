"""Built-in plugin registering the ``auth`` session attachable (registry credentials).

The controller serves it in every build session: ``AuthProvider()`` reads the client's
Docker config (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``) when the daemon
first asks. Only hook implementations live here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_attachables(registry: Registry) -> None:
    registry.add(
        "auth",
        "bkcore.sessions.auth.provider:AuthProvider",
        description="serve registry credentials from the Docker config and credential helpers",
    )
