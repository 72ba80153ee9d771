"""What an exporter plugin is to the core (``local``, ``tar``, ``image``, ``oci`` ...)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bkcore.progress import ProgressStream
    from bkcore.session.transport import Caller
    from bkcore.solver.types import Result


class ExportContext(Protocol):
    """What an exporter sees."""

    def view(self, result: Result | None) -> AbstractContextManager[Path]:
        """A read-only directory holding ``result`` (an empty one for ``None``)."""
        ...

    @property
    def caller(self) -> Caller | None:
        """The client's session, for exports written on the client side (FileSend)."""
        ...

    @property
    def progress(self) -> ProgressStream:
        """The job's progress stream (exporters show themselves as extra vertices)."""
        ...

    @property
    def metadata(self) -> Mapping[str, bytes]:
        """The result's metadata from the frontend (``containerimage.config`` ...; see
        :mod:`bkcore.frontend`); empty for raw LLB."""
        ...

    @property
    def refs(self) -> Mapping[str, Result | None]:
        """A multi-platform result's refs by platform (``linux/amd64``); empty when the
        result is a single ref (the ``result`` argument of :meth:`Exporter.export`)."""
        ...


class Exporter(Protocol):
    """Writes a build result somewhere."""

    async def export(
        self, ctx: ExportContext, result: Result | None, attrs: Mapping[str, str]
    ) -> Mapping[str, str]:
        """Export ``result`` as ``attrs`` say; return response metadata. Atomic: on error
        nothing half-written is left at the destination."""
        ...
