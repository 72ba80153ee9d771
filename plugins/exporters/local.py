"""The ``local`` exporter: the result's files into a directory on the client.

The daemon side walks a read-only view of the result and sends it with the diffcopy
protocol over the session's ``FileSend`` method (session.md §5.4). The client side
(:class:`bkcore.sessions.filesync.FileSendTarget`) receives into a temporary sibling of the
destination and swaps it into place when the transfer is complete, so the destination is
replaced only on success. Modes, symlinks, hard links and nanosecond mtimes are kept; the
client keeps its own ownership. ``source-date-epoch=N`` sets every mtime to N.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from bkcore.errors import SessionError
from bkcore.plugins.exporters.common import (
    as_export_error,
    client_of,
    exporting,
    source_date_epoch,
    viewed,
)

if TYPE_CHECKING:
    from bkcore.exporter import ExportContext
    from bkcore.solver.types import Result

__all__ = ["LocalExporter"]

VERTEX_NAME = "exporting to client directory"


class LocalExporter:
    """:class:`bkcore.exporter.Exporter` writing a client directory."""

    async def export(
        self, ctx: ExportContext, result: Result | None, attrs: Mapping[str, str]
    ) -> Mapping[str, str]:
        from bkcore.session.filesync import send_dir_to_client

        epoch = source_date_epoch(attrs)
        caller = client_of(ctx, "output type=local")
        async with exporting(ctx.progress, VERTEX_NAME):
            try:
                async with viewed(ctx, result) as root:
                    await send_dir_to_client(
                        caller,
                        str(root),
                        mod_time_ns=None if epoch is None else epoch * 1_000_000_000,
                    )
            except (SessionError, OSError) as exc:
                raise as_export_error("exporting to client directory", exc) from exc
        return {}
