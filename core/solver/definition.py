"""BuildKit's load checks (spec/llb.md §1) over a neutral list of ops, building the graph.

The LLB adapter parses ``Definition`` bytes into :class:`OpSpec` items (in ``def`` order,
terminal op last, with ``op=None``) and calls :func:`load_graph`, which returns the head edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bkcore.errors import DefinitionError
from bkcore.solver.types import Op, Vertex

__all__ = ["OpSpec", "load_graph"]


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One op of a definition: its digest, inputs as (digest, output index), the op."""

    digest: str
    inputs: tuple[tuple[str, int], ...] = ()
    op: Op | None = None
    """``None`` only for the terminal op (the last item)."""
    name: str = ""
    ignore_cache: bool = False


def load_graph(specs: Sequence[OpSpec]) -> tuple[Vertex, int]:
    """Check ``specs`` like buildkitd and return the head edge (vertex, output index).

    Raises :class:`DefinitionError` naming the offending op digest.
    """
    if not specs:
        raise DefinitionError("invalid LLB: the definition has no ops")
    by_digest: dict[str, OpSpec] = {}
    for spec in specs:
        by_digest.setdefault(spec.digest, spec)
    if len(by_digest) < 2:
        raise DefinitionError(f"invalid LLB with {len(by_digest)} vertexes", specs[-1].digest)
    terminal = specs[-1]
    if terminal.op is not None:
        raise DefinitionError("invalid LLB: the last op is not a terminal op", terminal.digest)
    if not terminal.inputs:
        raise DefinitionError("invalid LLB: the terminal op has no inputs", terminal.digest)
    for spec in by_digest.values():
        if spec.op is None and spec.digest != terminal.digest:
            raise DefinitionError("invalid LLB: op has no operation", spec.digest)
        for dgst, index in spec.inputs:
            target = by_digest.get(dgst)
            if target is None:
                raise DefinitionError(f"invalid missing input digest {dgst}", spec.digest)
            if target.op is None:
                raise DefinitionError("invalid LLB: input is the terminal op", spec.digest)
            if not 0 <= index < target.op.num_outputs:
                raise DefinitionError(
                    f"invalid output index {index} of input {dgst} "
                    f"({target.op.num_outputs} outputs)",
                    spec.digest,
                )
    head_digest, head_index = terminal.inputs[0]
    vertices = _build(by_digest, head_digest)
    return vertices[head_digest], head_index


def _build(by_digest: dict[str, OpSpec], head: str) -> dict[str, Vertex]:
    """Vertices reachable from ``head``, built inputs-first; rejects cycles (iterative DFS)."""
    built: dict[str, Vertex] = {}
    on_path: set[str] = set()
    stack: list[tuple[str, int]] = [(head, 0)]
    on_path.add(head)
    while stack:
        dgst, next_input = stack[-1]
        spec = by_digest[dgst]
        if next_input < len(spec.inputs):
            stack[-1] = (dgst, next_input + 1)
            child = spec.inputs[next_input][0]
            if child in built:
                continue
            if child in on_path:
                raise DefinitionError("invalid LLB: the graph has a cycle", dgst)
            on_path.add(child)
            stack.append((child, 0))
            continue
        stack.pop()
        on_path.discard(dgst)
        op = spec.op
        assert op is not None  # checked by load_graph
        built[dgst] = Vertex(
            digest=dgst,
            op=op,
            inputs=tuple((built[d], i) for d, i in spec.inputs),
            name=spec.name or dgst,
            ignore_cache=spec.ignore_cache,
        )
    return built
