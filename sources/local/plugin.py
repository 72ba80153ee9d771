"""Built-in plugin registering the ``local`` source scheme (``local://NAME``).

Holds only hook implementations; :mod:`bkcore.sources.local.source` is imported when the
first local source op is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_sources(registry: Registry) -> None:
    registry.add(
        "local",
        "bkcore.sources.local.source:LocalSource",
        description="client directories synced through the session (--local NAME=DIR)",
    )
