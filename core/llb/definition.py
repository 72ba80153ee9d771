"""Marshalling a graph into a ``Definition``, and the ``Definition`` wrapper itself."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from typing import BinaryIO

from bkcore.errors import DefinitionError
from bkcore.llb import pb
from bkcore.llb.digest import marshal as go_marshal
from bkcore.llb.digest import op_digest
from bkcore.llb.pbmake import make
from bkcore.llb.platforms import Platform
from bkcore.llb.vertex import MarshalContext, OpMeta, Output, SourceMap, Vertex

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_unique_id() -> str:
    """A random 25-character base-36 id, like the Go client's ``identity.NewID``."""
    n = secrets.randbits(128)
    out = []
    for _ in range(25):
        n, r = divmod(n, 36)
        out.append(_BASE36[r])
    return "".join(reversed(out))


class Definition:
    """A marshalled LLB graph: op bytes (terminal op last), per-op metadata, source map.

    ``bytes(defn)`` / ``defn.to_bytes()`` give the exact bytes the Go client would send.
    """

    __slots__ = ("_bytes", "_digests", "_index", "_ops", "_pb")

    def __init__(self, message: pb.Definition) -> None:
        self._pb = message
        self._ops = tuple(bytes(b) for b in message.def_)
        self._digests = tuple(op_digest(b) for b in self._ops)
        self._bytes = go_marshal(message)
        self._index: dict[str, bytes] | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Definition) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> Definition:
        """Decode strictly (``DefinitionError`` naming ``source`` on corrupt input).

        Empty input is the empty Definition (what marshalling scratch gives).
        """
        if not data:
            return cls(pb.Definition())
        from bkcore.llb.dump import load_definition

        return cls(load_definition(data, source))

    def to_bytes(self) -> bytes:
        return self._bytes

    def marshal(self) -> bytes:
        """The serialized Definition (same as ``to_bytes()``)."""
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def to_pb(self) -> pb.Definition:
        """A fresh ``pb.Definition`` (safe to modify)."""
        return pb.Definition().parse(self._bytes)

    def write(self, stream: BinaryIO) -> None:
        """Write the bytes, e.g. ``defn.write(sys.stdout.buffer)`` for ``buildctl build``."""
        stream.write(self._bytes)
        stream.flush()

    @property
    def ops(self) -> tuple[bytes, ...]:
        """Serialized ops in ``def`` order."""
        return self._ops

    @property
    def digests(self) -> tuple[str, ...]:
        """Digest of every op in ``def`` order (the terminal op last)."""
        return self._digests

    def op(self, digest: str) -> pb.Op:
        """The decoded op with this digest (``KeyError`` if it is not in the definition)."""
        if self._index is None:
            self._index = dict(zip(self._digests, self._ops, strict=True))
        return pb.Op().parse(self._index[digest])

    @property
    def metadata(self) -> Mapping[str, pb.OpMetadata]:
        return dict(self._pb.metadata)

    @property
    def terminal(self) -> str | None:
        """Digest of the terminal op, or None for an empty (scratch) definition."""
        return self._digests[-1] if self._ops else None

    @property
    def head(self) -> str | None:
        """Digest of the op whose output is the build result (Go's ``Definition.Head``)."""
        if not self._ops:
            return None
        term = pb.Op().parse(self._ops[-1])
        return term.inputs[0].digest if term.inputs else None

    @property
    def head_index(self) -> int:
        if not self._ops:
            return 0
        term = pb.Op().parse(self._ops[-1])
        return term.inputs[0].index if term.inputs else 0

    def __len__(self) -> int:
        return len(self._ops)

    def __repr__(self) -> str:
        return f"<Definition {len(self._ops)} ops, head {self.head}>"


def marshal(
    output: Output | None,
    *,
    platform: Platform | None = None,
    local_unique_id: str | None = None,
    meta: OpMeta | None = None,
    daemon_caps: Collection[str] | None = None,
) -> Definition:
    """Serialize the graph producing ``output`` like the Go client's ``State.Marshal``.

    ``daemon_caps`` are the LLB caps of the daemon when known (inside a frontend); execs then
    declare ``exec.meta.setsdefaultpath`` or, if unsupported, get a default ``PATH``.
    """
    msg = pb.Definition()
    if output is None:
        return Definition(msg)
    digests: dict[int, str] = {}
    keepalive: list[Vertex] = []

    def input_of(out: Output) -> pb.Input:
        try:
            return make(pb.Input, digest=digests[id(out.vertex)], index=out.index)
        except KeyError:
            raise DefinitionError(f"input {out.vertex.describe()} not marshalled yet") from None

    ctx = MarshalContext(
        platform=platform or Platform.host(),
        local_unique_id=local_unique_id or new_unique_id(),
        meta=meta or OpMeta(),
        input_of=input_of,
        daemon_caps=None if daemon_caps is None else frozenset(daemon_caps),
    )
    ops: list[bytes] = []
    emitted: set[str] = set()
    metas: dict[str, OpMeta] = {}
    caps: dict[str, set[str]] = {}
    maps: dict[int, tuple[int, SourceMap]] = {}  # id(map) -> (source index, map)
    locations: dict[str, list[pb.Location]] = {}

    stack: list[tuple[Vertex, bool]] = [(output.vertex, False)]
    while stack:
        vertex, expanded = stack.pop()
        if id(vertex) in digests:
            continue
        if not expanded:
            stack.append((vertex, True))
            stack.extend((o.vertex, False) for o in reversed(vertex.inputs()))
            continue
        done = vertex.marshal(ctx)
        data = done.data if done.data is not None else go_marshal(done.op)
        dgst = op_digest(data)
        digests[id(vertex)] = dgst
        keepalive.append(vertex)
        op_meta = ctx.meta.merged(done.meta)
        metas[dgst] = metas[dgst].merged(op_meta) if dgst in metas else op_meta
        caps.setdefault(dgst, set()).update(done.caps)
        if dgst not in emitted:
            emitted.add(dgst)
            ops.append(data)
            locs = locations.setdefault(dgst, [])
            for loc in op_meta.source_locations:
                idx = maps.setdefault(id(loc.source_map), (len(maps), loc.source_map))[0]
                ranges = [r.to_pb() for r in loc.ranges]
                locs.append(make(pb.Location, source_index=idx, ranges=ranges))

    terminal = go_marshal(make(pb.Op, inputs=[input_of(output)]))
    term_dgst = op_digest(terminal)
    term_caps = {"constraints", "platform"}
    for m in metas.values():
        if m.ignore_cache:
            term_caps.add("meta.ignorecache")
        if m.description:
            term_caps.add("meta.description")
        if m.export_cache is not None:
            term_caps.add("meta.exportcache")
    msg.def_ = [*ops, terminal]
    metadata = {d: metas[d].to_pb(caps[d]) for d in metas}
    metadata[term_dgst] = OpMeta().to_pb(term_caps)
    msg.metadata = metadata
    infos = []
    for _, smap in maps.values():
        info = pb.SourceInfo(filename=smap.filename, data=smap.data)
        if smap.state is not None and smap.state.output is not None:
            sub = marshal(
                smap.state.output,
                platform=platform,
                local_unique_id=ctx.local_unique_id,
                daemon_caps=daemon_caps,
            )
            info.definition = sub.to_pb()
        infos.append(info)
    msg.source = pb.Source(
        locations={d: pb.Locations(locations=locs) for d, locs in locations.items()},
        infos=infos,
    )
    return Definition(msg)
