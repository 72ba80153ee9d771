"""Built-in plugin registering the ``http`` and ``https`` source schemes (``https://URL``).

Holds only hook implementations; :mod:`bkcore.sources.http.source` is imported when the first
http(s) source op is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_sources(registry: Registry) -> None:
    for scheme in ("https", "http"):
        registry.add(
            scheme,
            "bkcore.sources.http.source:HTTPSource",
            description="one file downloaded from a URL (checksum, ETag revalidation)",
        )
