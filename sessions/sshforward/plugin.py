"""Built-in plugin registering the ``ssh`` session attachable.

The target builds a provider from ``--ssh`` values (``default``, ``ID`` or ``ID=SOCKET``):
``SSHProvider.from_specs(specs)``. Only hook implementations live here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_attachables(registry: Registry) -> None:
    registry.add(
        "ssh",
        "bkcore.sessions.sshforward.agent:SSHProvider.from_specs",
        description="forward client SSH agents to RUN --mount=type=ssh (--ssh)",
    )
