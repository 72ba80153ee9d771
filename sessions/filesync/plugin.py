"""Built-in plugin registering the ``filesync`` and ``filesend`` session attachables.

Holds only hook implementations; the attachables are imported when first used.

* ``filesync``: ``FileSyncProvider(dirs)`` with ``dirs`` = ``{name: directory}`` (``--local``).
* ``filesend``: ``FileSendTarget(dest_dir=... | file=... | stdout=True)`` (``--output``);
  a directory output replaces ``dest_dir`` only once the whole export has arrived.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_attachables(registry: Registry) -> None:
    registry.add(
        "filesync",
        "bkcore.sessions.filesync.provider:FileSyncProvider",
        description="serve client directories to local:// sources (--local NAME=DIR)",
    )
    registry.add(
        "filesend",
        "bkcore.sessions.filesync.filesend:FileSendTarget",
        description="receive local and tar exports on the client (--output)",
    )
