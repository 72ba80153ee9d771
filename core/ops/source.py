"""The solver :class:`~bkcore.solver.types.Op` of an LLB ``SourceOp``.

The identifier's scheme (``docker-image``, ``local``, ``git`` ...) selects a source plugin in
``engine.plugins.registry("sources")``. The plugin's :class:`~bkcore.source.Source` parses the
identifier and attrs when the graph is built (bad input fails before anything runs); the
resulting :class:`~bkcore.source.SourceInstance` gives the cache key strings and, when the
op has to run, the snapshot.

Cache-map digest of key ``k``: sha256 of ``buildkit.source.v0:k``, or ``random:<hex>`` when
``k`` starts with ``session:`` (spec/solver.md §2.3). Sources have no inputs, so no deps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bkcore.errors import DefinitionError
from bkcore.ops.cachejson import source_digest
from bkcore.solver.types import CacheMap, JobInfo, OpContext, Result

if TYPE_CHECKING:
    from bkcore.engine import Engine
    from bkcore.llb import pb
    from bkcore.llb.platforms import Platform
    from bkcore.progress import SharedProgress
    from bkcore.source import Source, SourceInstance

__all__ = ["SourceOpAdapter", "scheme_of"]

#: Parallelism group of source ops (they do I/O, not container runs).
WORKER = "local"


def scheme_of(identifier: str) -> str:
    """The scheme of ``scheme://rest``; raises ValueError when there is none."""
    scheme, sep, _ = identifier.partition("://")
    if not sep or not scheme:
        raise ValueError(f"invalid source identifier {identifier!r}: expected scheme://...")
    return scheme


@dataclass(frozen=True, slots=True)
class _Context:
    """:class:`bkcore.source.SourceContext` over the solver's :class:`OpContext`."""

    engine: Engine
    op_ctx: OpContext

    @property
    def progress(self) -> SharedProgress:
        return self.op_ctx.progress

    def jobs(self) -> Sequence[JobInfo]:
        return self.op_ctx.jobs()


class SourceOpAdapter:
    """One ``SourceOp``: keyed and fetched by the source plugin of its scheme."""

    def __init__(self, op: pb.Op, digest: str, engine: Engine, platform: Platform) -> None:
        source_op = op.source
        self.digest = digest
        self.identifier = source_op.identifier
        self._engine = engine
        try:
            scheme = scheme_of(self.identifier)
        except ValueError as exc:
            raise DefinitionError(str(exc), digest) from None
        registry = engine.plugins.registry("sources")
        if scheme not in registry:
            known = ", ".join(sorted(registry.keys())) or "none"
            raise DefinitionError(
                f"no source plugin for scheme {scheme!r} of {self.identifier!r} (known: {known})",
                digest,
            )
        loaded = registry.load(scheme)
        source: Source = loaded() if isinstance(loaded, type) else loaded
        self.instance: SourceInstance = source.identify(
            self.identifier, dict(source_op.attrs), str(platform)
        )

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def worker(self) -> str:
        return WORKER

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        key, last = await self.instance.cache_key(_Context(self._engine, ctx), index)
        return CacheMap(digest=source_digest(key)), last

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        if inputs:
            raise DefinitionError(f"source {self.identifier!r} takes no inputs", self.digest)
        return [await self.instance.snapshot(_Context(self._engine, ctx))]
