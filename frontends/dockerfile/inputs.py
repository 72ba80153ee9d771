"""Frontend inputs (``FrontendInputs``) as LLB states, like the Go client's ``NewDefinitionOp``.

A request's inputs arrive as marshalled definitions; ``--opt context:NAME=input:INPUT`` makes
one of them a named context, so the converter needs it as an :class:`bkcore.llb.State` it can
build on. :func:`definition_state` rebuilds the graph from the ops of the definition: each op
is re-emitted as it was (same bytes, so the same digests), with its metadata and caps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from bkcore.errors import FrontendError
from bkcore.llb.vertex import Marshalled, OpMeta, Output, Vertex

if TYPE_CHECKING:
    from bkcore import llb
    from bkcore.llb import pb
    from bkcore.llb.vertex import MarshalContext

__all__ = ["definition_state", "input_configs"]


class _DefinitionVertex(Vertex):
    """One op of a marshalled definition, emitted again unchanged."""

    __slots__ = ("_caps", "_digest", "_inputs", "_meta", "_op")

    def __init__(
        self,
        digest: str,
        op: pb.Op,
        inputs: tuple[Output, ...],
        meta: OpMeta,
        caps: frozenset[str],
    ) -> None:
        self._digest = digest
        self._op = op
        self._inputs = inputs
        self._meta = meta
        self._caps = caps

    def inputs(self) -> tuple[Output, ...]:
        return self._inputs

    def marshal(self, ctx: MarshalContext) -> Marshalled:
        from bkcore.llb import pb

        op = pb.Op().parse(bytes(self._op))
        op.inputs = [ctx.input_of(out) for out in self._inputs]
        return Marshalled(op, self._meta, self._caps)

    def describe(self) -> str:
        return f"input op {self._digest}"


def definition_state(definition: pb.Definition, name: str = "") -> llb.State:
    """The state whose graph is ``definition`` (scratch for an empty one).

    A malformed definition (an input naming an op it does not hold, no terminal op) is a
    :class:`FrontendError` naming the input.
    """
    import betterproto

    from bkcore import llb
    from bkcore.llb import pb
    from bkcore.llb.digest import op_digest

    label = f"input {name!r}" if name else "input"
    if not definition.def_:
        return llb.scratch()
    ops: dict[str, pb.Op] = {}
    order: list[str] = []
    for raw in definition.def_:
        digest = op_digest(bytes(raw))
        try:
            ops[digest] = pb.Op().parse(bytes(raw))
        except Exception as exc:  # betterproto raises assorted types on bad bytes
            raise FrontendError(f"{label}: cannot parse op {digest}: {exc}") from exc
        order.append(digest)
    terminal = ops[order[-1]]
    if betterproto.which_one_of(terminal, "op")[0] or len(terminal.inputs) != 1:
        raise FrontendError(f"{label}: the definition has no terminal op")
    vertices: dict[str, _DefinitionVertex] = {}

    def build(digest: str) -> _DefinitionVertex:
        # Iterative post-order: deep graphs must not hit the recursion limit.
        stack: list[tuple[str, bool]] = [(digest, False)]
        while stack:
            current, ready = stack.pop()
            if current in vertices:
                continue
            op = ops.get(current)
            if op is None:
                raise FrontendError(f"{label}: an op refers to {current}, which is missing")
            if not ready:
                stack.append((current, True))
                stack.extend((inp.digest, False) for inp in reversed(op.inputs))
                continue
            inputs = tuple(Output(vertices[inp.digest], int(inp.index)) for inp in op.inputs)
            md = definition.metadata.get(current)
            meta = OpMeta(
                description=dict(md.description) if md is not None else {},
                ignore_cache=bool(md.ignore_cache) if md is not None else False,
            )
            caps = frozenset(k for k, v in md.caps.items() if v) if md is not None else frozenset()
            vertices[current] = _DefinitionVertex(current, op, inputs, meta, caps)
        return vertices[digest]

    head = terminal.inputs[0]
    return llb.scratch().with_output(Output(build(head.digest), int(head.index)))


def input_configs(opts: Mapping[str, str]) -> dict[str, bytes]:
    """The image configs of ``input:`` contexts, from ``input-metadata:NAME`` options."""
    from bkcore.frontends.dockerfile.convert.contexts import parse_input_metadata

    out: dict[str, bytes] = {}
    for key, value in opts.items():
        if key.startswith("input-metadata:"):
            meta = parse_input_metadata(value)
            config = meta.get("containerimage.config")
            if config is not None:
                out[key[len("input-metadata:") :]] = config
    return out
