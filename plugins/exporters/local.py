"""The ``local`` exporter: the result's files into a directory on the client.

The daemon side walks a read-only view of the result and sends it with the diffcopy
protocol over the session's ``FileSend`` method (session.md §5.4). The client side
(:class:`bkcore.sessions.filesync.FileSendTarget`) receives into a temporary sibling of the
destination and swaps it into place when the transfer is complete, so the destination is
replaced only on success. Modes, symlinks, hard links and nanosecond mtimes are kept; the
client keeps its own ownership. ``source-date-epoch=N`` sets every mtime to N. A
multi-platform result goes into one subdirectory per platform (``linux_amd64/``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bkcore.plugins.exporters.common import client_export

if TYPE_CHECKING:
    from bkcore.exporter import ExportContext
    from bkcore.solver.types import Result

__all__ = ["LocalExporter"]

VERTEX_NAME = "exporting to client directory"
#: The status inside the vertex counting the bytes sent (BuildKit's wording).
STATUS = "copying files"


class LocalExporter:
    """:class:`bkcore.exporter.Exporter` writing a client directory."""

    async def export(
        self, ctx: ExportContext, result: Result | None, attrs: Mapping[str, str]
    ) -> Mapping[str, str]:
        from bkcore.session.filesync.send import send_dir_to_client, send_dirs_to_client

        async with client_export(
            ctx, result, attrs, output="output type=local", name=VERTEX_NAME
        ) as out:
            mod_time_ns = None if out.epoch is None else out.epoch * 1_000_000_000
            tree = out.tree
            assert out.vertex is not None
            started = time.time()
            out.vertex.status(STATUS, started=started)
            if isinstance(tree, str):
                stats = await send_dir_to_client(out.caller, tree, mod_time_ns=mod_time_ns)
            else:  # a multi-platform result: one subdirectory per platform
                stats = await send_dirs_to_client(out.caller, tree, mod_time_ns=mod_time_ns)
            # BuildKit's "copying files 353B": the file bytes sent, shown when done
            out.vertex.status(
                STATUS, current=stats.bytes_sent, started=started, completed=time.time()
            )
        return {}
