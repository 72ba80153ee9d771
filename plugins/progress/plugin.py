"""Built-in plugin registering the ``tty``, ``plain`` and ``rawjson`` progress renderers.

A renderer target is a class built as ``Renderer(out)`` (a text stream) whose
``await renderer.run(reader)`` draws a :class:`bkcore.progress.ProgressReader` until it ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_progress_renderers(registry: Registry) -> None:
    registry.add(
        "tty",
        "bkcore.plugins.progress.tty:TtyRenderer",
        description="live view of running steps with timings and log tails",
    )
    registry.add(
        "plain",
        "bkcore.plugins.progress.plain:PlainRenderer",
        description="BuildKit-style '#N' lines (logs, CI)",
    )
    registry.add(
        "rawjson",
        "bkcore.plugins.progress.rawjson:RawJsonRenderer",
        description="one JSON SolveStatus object per progress event",
    )
