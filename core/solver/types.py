"""The solver's interfaces: vertices, ops, cache maps and results (spec/solver.md §1-§3).

The solver is generic. An adapter (``bkcore.ops``) turns each LLB op kind into an :class:`Op`:

* ``cache_map(ctx, index)`` describes the op's cache key: a :class:`CacheMap` and whether it
  is the last one (a source may return several in turn, e.g. image maps 1 and 2).
* ``exec(ctx, inputs)`` runs it and returns one :class:`Result` per output.

Result ownership: results returned by ``exec`` and by :meth:`ResultStore.load` belong to the
solver, which releases them when no job uses the vertex any more. Results passed to ``exec``,
``compute_digest`` and ``preprocess`` are borrowed: ``clone()`` one to keep it. The result of
``Solver.solve`` is a clone owned by the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bkcore.progress import SharedProgress

__all__ = [
    "CacheMap",
    "ComputeDigest",
    "Dep",
    "JobInfo",
    "Op",
    "OpContext",
    "Preprocess",
    "Result",
    "ResultStore",
    "Vertex",
]


@runtime_checkable
class Result(Protocol):
    """A reference to a stored result (snapshot or other ref) with reference counting."""

    @property
    def id(self) -> str:
        """Persistent id of the result; :meth:`ResultStore.load` finds it again."""
        ...

    def clone(self) -> Result:
        """A new reference to the same result (released separately)."""
        ...

    async def release(self) -> None:
        """Drop this reference."""
        ...


class ResultStore(Protocol):
    """Loads results saved under cache keys (the cache engineer's store implements it)."""

    async def load(self, result_id: str) -> Result | None:
        """A new reference to ``result_id``, or ``None`` when it was pruned."""
        ...


ComputeDigest = Callable[[Result], Awaitable[str | None]]
"""Content digest of an input result (the "slow" key); ``None`` when there is none."""

Preprocess = Callable[[Result], Awaitable[None]]
"""Prepares an input result before its content key is computed or the op runs (unlazy)."""


@dataclass(frozen=True, slots=True)
class Dep:
    """How input i of an op takes part in its cache key."""

    selector: str = ""
    compute_digest: ComputeDigest | None = None
    preprocess: Preprocess | None = None


@dataclass(frozen=True, slots=True)
class CacheMap:
    """An op's cache description: its digest and one :class:`Dep` per input.

    ``opts`` travel with the map (to the exporter, for example) and never affect keys.
    """

    digest: str
    deps: tuple[Dep, ...] = ()
    opts: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job that shares a vertex; ``values`` carry e.g. its session id for the op."""

    id: str
    values: Mapping[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class OpContext:
    """What an op gets while computing its cache map or running."""

    vertex: Vertex
    progress: SharedProgress
    """Write logs, statuses and warnings of this vertex (reaches every sharing job)."""
    jobs: Callable[[], Sequence[JobInfo]]
    """The jobs that currently share this vertex (e.g. to find a session among them)."""


class Op(Protocol):
    """One operation the solver can key and run."""

    @property
    def num_outputs(self) -> int:
        """How many results ``exec`` returns (load checks reject higher output indexes)."""
        ...

    @property
    def worker(self) -> str:
        """Name of the worker that runs it; each worker has its own parallelism limit."""
        ...

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        """Cache map number ``index`` and whether it is the last one."""
        ...

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        """Run with the (borrowed) input results; return one new result per output.

        Cancellation arrives as ``asyncio.CancelledError``: stop (kill the process) and
        re-raise it.
        """
        ...


@dataclass(eq=False, slots=True)
class Vertex:
    """A node of the graph: an op, its inputs as (vertex, output index) edges, metadata."""

    digest: str
    op: Op
    inputs: tuple[tuple[Vertex, int], ...] = ()
    name: str = ""
    ignore_cache: bool = False
