"""MergeOp and DiffOp: stacking filesystems and taking the difference of two."""

from __future__ import annotations

from collections.abc import Sequence

from bkcore.llb import pb
from bkcore.llb.pbmake import make
from bkcore.llb.state import State
from bkcore.llb.vertex import MarshalContext, Marshalled, OpMeta, Output, Vertex


class MergeOp(Vertex):
    """Layers stacked in order, later ones on top. Built by ``merge``."""

    __slots__ = ("_inputs", "_meta", "output")

    def __init__(self, inputs: Sequence[Output], meta: OpMeta) -> None:
        self._inputs = tuple(inputs)
        self._meta = meta
        self.output = Output(self, 0)

    def inputs(self) -> tuple[Output, ...]:
        return self._inputs

    def describe(self) -> str:
        return f"merge of {len(self._inputs)}"

    def marshal(self, ctx: MarshalContext) -> Marshalled:
        merge = make(
            pb.MergeOp, inputs=[make(pb.MergeInput, input=i) for i in range(len(self._inputs))]
        )
        inputs = [ctx.input_of(o) for o in self._inputs]
        op = ctx.op(None, self._meta, platform=False, inputs=inputs, merge=merge)
        return Marshalled(op, self._meta, frozenset({"mergeop"}))


class DiffOp(Vertex):
    """What changed from ``lower`` to ``upper``. Built by ``diff``."""

    __slots__ = ("_lower", "_meta", "_upper", "output")

    def __init__(self, lower: Output | None, upper: Output | None, meta: OpMeta) -> None:
        self._lower = lower
        self._upper = upper
        self._meta = meta
        self.output = Output(self, 0)

    def inputs(self) -> tuple[Output, ...]:
        return tuple(o for o in (self._lower, self._upper) if o is not None)

    def describe(self) -> str:
        return "diff"

    def marshal(self, ctx: MarshalContext) -> Marshalled:
        inputs: list[pb.Input] = []
        lower = upper = -1
        if self._lower is not None:
            lower = len(inputs)
            inputs.append(ctx.input_of(self._lower))
        if self._upper is not None:
            upper = len(inputs)
            inputs.append(ctx.input_of(self._upper))
        diff = make(
            pb.DiffOp,
            lower=make(pb.LowerDiffInput, input=lower),
            upper=make(pb.UpperDiffInput, input=upper),
        )
        op = ctx.op(None, self._meta, platform=False, inputs=inputs, diff=diff)
        return Marshalled(op, self._meta, frozenset({"diffop"}))


def merge(
    states: Sequence[State], *, meta: OpMeta | None = None, custom_name: str | None = None
) -> State:
    """Stack ``states`` (later on top). Scratch inputs are dropped; one input is returned as is."""
    kept = [s for s in states if s.output is not None]
    if not kept:
        return State()
    if len(kept) == 1:
        return kept[0]
    outs = [s.output for s in kept if s.output is not None]
    return State(_output=MergeOp(outs, OpMeta.build(meta, custom_name)).output)


def diff(
    lower: State, upper: State, *, meta: OpMeta | None = None, custom_name: str | None = None
) -> State:
    """The changes from ``lower`` to ``upper``; keeps ``lower``'s settings (env, cwd, ...)."""
    if lower.output is None:
        return upper if upper.output is not None else State()
    op = DiffOp(lower.output, upper.output, OpMeta.build(meta, custom_name))
    return lower.with_output(op.output)
