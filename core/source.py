"""What a source plugin is to the core (``docker-image://``, ``git://``, ``local://`` ...).

A source plugin registers, per URL scheme, a factory (:class:`Source`) that turns one
``SourceOp`` into a :class:`SourceInstance`. The instance gives the solver its cache key
strings (spec/solver.md §2.3) and, when it must run, a snapshot result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bkcore.engine import Engine
    from bkcore.progress import SharedProgress
    from bkcore.solver.types import JobInfo, Result


class SourceContext(Protocol):
    """What a source sees while keying or fetching."""

    @property
    def engine(self) -> Engine:
        """The store, sessions and plugins of this bkcore instance."""
        ...

    @property
    def progress(self) -> SharedProgress:
        """Progress of the source vertex (statuses such as ``transferring ctx:``)."""
        ...

    def jobs(self) -> Sequence[JobInfo]:
        """The jobs sharing this vertex; their values carry session ids."""
        ...


class SourceInstance(Protocol):
    """One source op, identified and validated."""

    async def cache_key(self, ctx: SourceContext, index: int) -> tuple[str, bool]:
        """Key string number ``index`` (``session:``-prefixed when session-bound), and
        whether it is the last one."""
        ...

    async def snapshot(self, ctx: SourceContext) -> Result:
        """Fetch the content and return a committed snapshot result."""
        ...


class Source(Protocol):
    """Factory for one URL scheme; cheap and free of I/O."""

    def identify(
        self, identifier: str, attrs: Mapping[str, str], platform: str | None
    ) -> SourceInstance:
        """Parse ``identifier`` (``scheme://...``) and ``attrs``; raise ``SourceError`` on bad
        input."""
        ...
