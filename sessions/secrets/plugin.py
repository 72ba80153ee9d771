"""Built-in plugin registering the ``secrets`` session attachable.

The target builds a provider from ``--secret`` values (``id=ID,src=FILE`` / ``id=ID,env=VAR``):
``SecretsProvider.from_specs(specs)``. Only hook implementations live here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_attachables(registry: Registry) -> None:
    registry.add(
        "secrets",
        "bkcore.sessions.secrets.provider:SecretsProvider.from_specs",
        description="serve client secrets to RUN --mount=type=secret (--secret)",
    )
