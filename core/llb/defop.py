"""A marshalled Definition used again as a State (the Go client's ``NewDefinitionOp``).

Frontends get some inputs as Definitions (``context:NAME=input:...``, results of nested
builds) and build on top of them. Each op of the Definition becomes a vertex that marshals to
exactly its original bytes, so the digests, and with them the cache, are unchanged.
"""

from __future__ import annotations

import betterproto

from bkcore.errors import DefinitionError
from bkcore.llb import pb
from bkcore.llb.digest import op_digest
from bkcore.llb.platforms import Platform
from bkcore.llb.state import State
from bkcore.llb.vertex import (
    MarshalContext,
    Marshalled,
    OpMeta,
    Output,
    ProgressGroup,
    Vertex,
)

__all__ = ["from_definition"]


class _DefinedOp(Vertex):
    """One op taken from a Definition: marshals to its own bytes."""

    __slots__ = ("_caps", "_data", "_inputs", "_meta", "digest")

    def __init__(
        self,
        data: bytes,
        digest: str,
        inputs: tuple[Output, ...],
        meta: OpMeta,
        caps: frozenset[str],
    ) -> None:
        self._data = data
        self.digest = digest
        self._inputs = inputs
        self._meta = meta
        self._caps = caps

    def inputs(self) -> tuple[Output, ...]:
        return self._inputs

    def describe(self) -> str:
        return self.digest

    def marshal(self, ctx: MarshalContext) -> Marshalled:
        return Marshalled(pb.Op().parse(self._data), self._meta, self._caps, data=self._data)


def _meta_of(md: pb.OpMetadata | None) -> tuple[OpMeta, frozenset[str]]:
    if md is None:
        return OpMeta(), frozenset()
    export: bool | None = None
    if betterproto.serialized_on_wire(md.export_cache):
        export = md.export_cache.value
    group = None
    if md.progress_group is not None and md.progress_group.id:
        g = md.progress_group
        group = ProgressGroup(g.id, g.name, g.weak)
    meta = OpMeta(
        description=dict(md.description),
        ignore_cache=md.ignore_cache,
        export_cache=export,
        progress_group=group,
    )
    return meta, frozenset(k for k, v in md.caps.items() if v)


def from_definition(definition: pb.Definition | bytes) -> State:
    """The result of ``definition`` as a State (scratch for an empty Definition).

    Ops keep their bytes (and so their digests), metadata and caps; a malformed Definition
    (an input naming an op it does not contain, no terminal op) is a DefinitionError.
    """
    msg = pb.Definition().parse(definition) if isinstance(definition, bytes) else definition
    raw = [bytes(b) for b in msg.def_]
    if not raw:
        return State()
    by_digest: dict[str, bytes] = {op_digest(b): b for b in raw}
    terminal = pb.Op().parse(raw[-1])
    if betterproto.which_one_of(terminal, "op")[0] or len(terminal.inputs) != 1:
        raise DefinitionError("definition has no terminal op")
    vertices: dict[str, _DefinedOp] = {}

    def vertex(digest: str) -> _DefinedOp:
        # iterative post-order so deep graphs need no recursion
        stack = [digest]
        while stack:
            dg = stack[-1]
            if dg in vertices:
                stack.pop()
                continue
            data = by_digest.get(dg)
            if data is None:
                raise DefinitionError(f"definition refers to a missing op {dg}")
            op = pb.Op().parse(data)
            missing = [i.digest for i in op.inputs if i.digest not in vertices]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            outs = tuple(Output(vertices[i.digest], i.index) for i in op.inputs)
            meta, caps = _meta_of(msg.metadata.get(dg))
            vertices[dg] = _DefinedOp(data, dg, outs, meta, caps)
        return vertices[digest]

    head = terminal.inputs[0]
    top = vertex(head.digest)
    top_op = pb.Op().parse(top._data)
    platform = None
    if betterproto.serialized_on_wire(top_op.platform) and top_op.platform.os:
        p = top_op.platform
        platform = Platform(p.os, p.architecture, p.variant)
    return State(_output=Output(top, head.index, platform), _platform=platform)
