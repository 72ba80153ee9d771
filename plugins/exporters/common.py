"""What the ``local`` and ``tar`` exporters share: attrs, the progress vertex, the view."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bkcore.errors import BkError, ExportError, SessionError
from bkcore.progress import StatusEvent, VertexEvent
from bkcore.threads import entered_in_thread

if TYPE_CHECKING:
    from bkcore.exporter import ExportContext
    from bkcore.progress import ProgressStream
    from bkcore.session.transport import Caller
    from bkcore.solver.types import Result

__all__ = [
    "ClientExport",
    "ExportVertex",
    "client_export",
    "client_of",
    "exporting",
    "platform_dir",
    "source_date_epoch",
    "viewed",
]

EPOCH_ATTR = "source-date-epoch"


def source_date_epoch(attrs: Mapping[str, str]) -> int | None:
    """The ``source-date-epoch`` attr in whole seconds (None when absent or empty)."""
    value = attrs.get(EPOCH_ATTR, "").strip()
    if not value:
        return None
    try:
        epoch = int(value, 10)
    except ValueError:
        raise ExportError(f"invalid {EPOCH_ATTR} {value!r}: expected decimal seconds") from None
    if epoch < 0:
        raise ExportError(f"invalid {EPOCH_ATTR} {value!r}: must not be negative")
    return epoch


def client_of(ctx: ExportContext, what: str) -> Caller:
    caller = ctx.caller
    if caller is None:
        raise ExportError(f"{what} needs a client session to write to")
    return caller


@dataclass(frozen=True, slots=True)
class ExportVertex:
    """The vertex of an export, for the sub-task statuses shown inside it (as BuildKit's
    exporters: ``copying files 353B``, ``exporting layers``, ``pushing manifest for ...``)."""

    progress: ProgressStream
    digest: str

    def status(
        self,
        name: str,
        *,
        current: int = 0,
        started: float | None = None,
        completed: float | None = None,
    ) -> StatusEvent:
        """Write the latest state of sub-task ``name`` of this vertex."""
        event = StatusEvent(
            id=name,
            vertex=self.digest,
            name=name,
            current=current,
            timestamp=time.time(),
            started=started,
            completed=completed,
        )
        self.progress.write(event)
        return event

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        """Sub-task ``name``: started when the block is entered, completed when it is left
        (also on error, as BuildKit's ``progress.OneOff``)."""
        started = time.time()
        self.status(name, started=started)
        try:
            yield
        finally:
            self.status(name, started=started, completed=time.time())


@asynccontextmanager
async def exporting(progress: ProgressStream, name: str) -> AsyncIterator[ExportVertex]:
    """Show the export as its own vertex: started, then completed or failed. The block gets
    the vertex, to show sub-task statuses in it."""
    digest = "sha256:" + hashlib.sha256(secrets.token_bytes(16)).hexdigest()
    started = time.time()
    progress.write(VertexEvent(digest, name, started=started))
    try:
        yield ExportVertex(progress, digest)
    except BaseException as exc:
        error = str(exc) if isinstance(exc, Exception) else "canceled"
        progress.write(
            VertexEvent(digest, name, started=started, completed=time.time(), error=error)
        )
        raise
    progress.write(VertexEvent(digest, name, started=started, completed=time.time()))


@asynccontextmanager
async def viewed(ctx: ExportContext, result: Result | None) -> AsyncIterator[Path]:
    """``ctx.view(result)`` entered and left in threads (a view may mount a file system)."""
    async with entered_in_thread(ctx.view(result)) as path:
        yield path


def as_export_error(what: str, exc: BaseException) -> BkError:
    """A one-line :class:`ExportError` for a failure while exporting."""
    if isinstance(exc, ExportError):
        return exc
    return ExportError(f"{what}: {exc}")


@dataclass(frozen=True, slots=True)
class ClientExport:
    """What an exporter writing to the client works from."""

    root: Path  #: the result's read-only view (an empty one for a multi-platform result)
    caller: Caller  #: the client session to send to
    epoch: int | None  #: ``source-date-epoch`` in seconds, if set
    #: A multi-platform result's views by directory name (``linux_amd64``); else empty.
    platform_roots: Mapping[str, Path] = field(default_factory=dict)
    #: The export's vertex (for sub-task statuses); None outside :func:`client_export`.
    vertex: ExportVertex | None = None

    @property
    def tree(self) -> str | dict[str, str]:
        """The one tree to export, or the named trees of a multi-platform result."""
        if self.platform_roots:
            return {name: str(path) for name, path in self.platform_roots.items()}
        return str(self.root)


def platform_dir(platform: str) -> str:
    """The directory of one platform's files in a multi-platform export (``linux_arm64_v8``)."""
    return platform.replace("/", "_")


@asynccontextmanager
async def client_export(
    ctx: ExportContext,
    result: Result | None,
    attrs: Mapping[str, str],
    *,
    output: str,
    name: str,
) -> AsyncIterator[ClientExport]:
    """The frame of an export to the client: attrs and session checked, then the vertex
    ``name`` shown while the result is viewed; a session or OS error in the block becomes an
    :class:`ExportError` starting with ``name``. ``output`` names the output in errors."""
    epoch = source_date_epoch(attrs)
    caller = client_of(ctx, output)
    refs = dict(ctx.refs)
    async with exporting(ctx.progress, name) as vertex:
        try:
            async with AsyncExitStack() as stack:
                roots: dict[str, Path] = {}
                for platform in sorted(refs):
                    dirname = platform_dir(platform)
                    if dirname in roots:
                        raise ExportError(f"{output}: two platforms export to {dirname}/")
                    roots[dirname] = await stack.enter_async_context(viewed(ctx, refs[platform]))
                root = await stack.enter_async_context(viewed(ctx, None if refs else result))
                yield ClientExport(root, caller, epoch, roots, vertex)
        except (SessionError, OSError) as exc:
            raise as_export_error(name, exc) from exc
