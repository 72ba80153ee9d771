"""Turn an LLB ``pb.Definition`` into the solver's graph of op adapters.

:func:`build_graph` parses every op, picks the adapter for its kind (exec, file, source,
merge, diff), names each vertex (``llb.customname`` or BuildKit's default name), applies
``ignore_cache`` and hands the list to :func:`bkcore.solver.definition.load_graph`, which
runs BuildKit's load checks and returns the head edge.

Adapters are classes (or any callable) taking ``(op, digest, engine, platform)``: the parsed
``pb.Op``, its vertex digest, the :class:`~bkcore.engine.Engine` and the op's normalised
:class:`~bkcore.llb.platforms.Platform` (the op's own, else the engine default). They are
imported on first use, so a definition without exec ops never imports the exec adapter.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

import betterproto

from bkcore.errors import BkError, DefinitionError, SolveError
from bkcore.llb import pb
from bkcore.llb.digest import op_digest
from bkcore.llb.dump import go_quote
from bkcore.llb.platforms import Platform
from bkcore.ops.decode import parse_op
from bkcore.solver.definition import OpSpec, load_graph
from bkcore.solver.types import Op, Vertex

if TYPE_CHECKING:
    from bkcore.engine import Engine

__all__ = [
    "ADAPTERS",
    "AdapterFactory",
    "GraphHead",
    "build_graph",
    "check_entitlements",
    "default_name",
]

AdapterFactory = Callable[[pb.Op, str, "Engine", Platform], Op]
"""Builds the solver :class:`Op` of one LLB op: ``(op, digest, engine, platform)``."""

#: Op kind -> ``module:attr`` of its adapter (imported lazily).
ADAPTERS: Final[Mapping[str, str]] = {
    "exec": "bkcore.ops.exec:ExecOpAdapter",
    "file": "bkcore.ops.file:FileOpAdapter",
    "source": "bkcore.ops.source:SourceOpAdapter",
    "merge": "bkcore.ops.mergediff:MergeOpAdapter",
    "diff": "bkcore.ops.mergediff:DiffOpAdapter",
}

CUSTOM_NAME: Final = "llb.customname"


class GraphHead(NamedTuple):
    """The edge a definition produces: solve ``output`` of ``vertex``."""

    vertex: Vertex
    output: int


def build_graph(
    definition: pb.Definition,
    engine: Engine,
    *,
    ignore_cache_all: bool = False,
    adapters: Mapping[str, AdapterFactory] | None = None,
) -> GraphHead:
    """Build the vertex graph of ``definition``; return its head edge.

    ``ignore_cache_all`` (``--no-cache``) marks every vertex ignore_cache; otherwise
    ``OpMetadata.ignore_cache`` decides per op. ``adapters`` overrides the adapter of some
    op kinds (tests, plugins); the rest come from :data:`ADAPTERS`. Raises
    :class:`DefinitionError` (naming the op digest) for an unsupported op kind or platform
    and for everything :func:`load_graph` rejects; errors an adapter raises while being built
    pass through when they are :class:`BkError`\\ s and are wrapped otherwise.
    """
    default_platform = Platform.parse(engine.platform)
    parsed: list[tuple[str, pb.Op]] = []
    ops_by_digest: dict[str, pb.Op] = {}
    for raw in definition.def_:
        digest = op_digest(raw)
        op = ops_by_digest.get(digest)
        if op is None:
            try:
                op = ops_by_digest[digest] = parse_op(raw)
            except Exception as exc:  # betterproto raises assorted types on bad bytes
                raise DefinitionError(f"cannot parse op: {exc}", digest) from exc
        parsed.append((digest, op))
    names = _names(ops_by_digest, definition.metadata)
    loaded: dict[str, Op] = {}
    specs: list[OpSpec] = []
    for digest, op in parsed:
        kind, _ = _kind(op)
        inputs = tuple((inp.digest, int(inp.index)) for inp in op.inputs)
        if not kind:
            specs.append(OpSpec(digest=digest, inputs=inputs))
            continue
        adapter = loaded.get(digest)
        if adapter is None:
            factory = _factory(kind, digest, adapters)
            platform = _platform(op, default_platform, digest)
            try:
                adapter = factory(op, digest, engine, platform)
            except BkError:
                raise
            except Exception as exc:
                raise DefinitionError(
                    f"invalid {kind} op: {type(exc).__name__}: {exc}", digest
                ) from exc
            loaded[digest] = adapter
        meta = definition.metadata.get(digest)
        ignore = ignore_cache_all or bool(meta is not None and meta.ignore_cache)
        specs.append(
            OpSpec(
                digest=digest,
                inputs=inputs,
                op=adapter,
                name=names.get(digest, digest),
                ignore_cache=ignore,
            )
        )
    vertex, output = load_graph(specs)
    return GraphHead(vertex, output)


def _kind(op: pb.Op) -> tuple[str, Any]:
    return cast(tuple[str, Any], betterproto.which_one_of(op, "op"))


def _factory(
    kind: str, digest: str, overrides: Mapping[str, AdapterFactory] | None
) -> AdapterFactory:
    if overrides is not None and kind in overrides:
        return overrides[kind]
    target = ADAPTERS.get(kind)
    if target is None:
        raise DefinitionError(f"{kind} ops are not supported", digest)
    module_name, _, attr = target.partition(":")
    try:
        return cast(AdapterFactory, getattr(importlib.import_module(module_name), attr))
    except (ImportError, AttributeError) as exc:
        raise DefinitionError(
            f"{kind} ops are not available in this bkcore ({target}: {exc})", digest
        ) from exc


def _platform(op: pb.Op, default: Platform, digest: str) -> Platform:
    plat = op.platform
    if not (plat.os or plat.architecture or plat.variant):
        return default
    try:
        return Platform(plat.os, plat.architecture, plat.variant)
    except DefinitionError as exc:
        raise DefinitionError(str(exc), digest) from exc


def default_name(op: pb.Op, input_names: list[str]) -> str:
    """BuildKit's name for a vertex without ``llb.customname``.

    ``input_names`` are the names of ``op.inputs`` in order (only merge and diff use them).
    """
    kind, body = _kind(op)
    if kind == "source":
        return _source_name(body)
    if kind == "exec":
        return " ".join(body.meta.args)
    if kind == "file":
        return ", ".join(filter(None, (_action_name(a) for a in body.actions)))
    if kind == "merge":
        return "merge " + " + ".join(go_quote(n) for n in input_names)
    if kind == "diff":
        lower = _diff_side(body.lower.input, input_names)
        upper = _diff_side(body.upper.input, input_names)
        return f"diff {lower} -> {upper}"
    if kind == "build":
        return "build"
    return "unknown"


def _source_name(source: pb.SourceOp) -> str:
    identifier = source.identifier
    if identifier.startswith("local://"):
        raw = source.attrs.get("local.includepattern", "")
        try:
            patterns = json.loads(raw) if raw else []
        except ValueError:
            patterns = []
        if isinstance(patterns, list) and len(patterns) == 1 and isinstance(patterns[0], str):
            return f"{identifier} ({patterns[0]})"
    return identifier


def _action_name(action: pb.FileAction) -> str:
    kind, body = cast(tuple[str, Any], betterproto.which_one_of(action, "action"))
    if kind == "copy":
        return f"copy {body.src} {body.dest}"
    if kind in ("mkfile", "mkdir", "rm"):
        return f"{kind} {body.path}"
    return ""


def _diff_side(index: int, input_names: list[str]) -> str:
    if index == -1:
        return "scratch"
    if 0 <= index < len(input_names):
        return go_quote(input_names[index])
    return "unknown"


def _names(ops: Mapping[str, pb.Op], metadata: Mapping[str, pb.OpMetadata]) -> dict[str, str]:
    """Vertex name per digest; merge/diff names need their inputs' names (iterative DFS)."""
    names: dict[str, str] = {}

    def custom(digest: str) -> str:
        meta = metadata.get(digest)
        return meta.description.get(CUSTOM_NAME, "") if meta is not None else ""

    for root in ops:
        stack = [root]
        visiting: set[str] = set()
        while stack:
            digest = stack[-1]
            if digest in names:
                stack.pop()
                continue
            op = ops[digest]
            name = custom(digest)
            kind, _ = _kind(op)
            if name or not kind or kind not in ("merge", "diff"):
                names[digest] = name or (default_name(op, []) if kind else digest)
                stack.pop()
                continue
            pending = [
                i.digest
                for i in op.inputs
                if i.digest in ops and i.digest not in names and i.digest not in visiting
            ]
            if pending and digest not in visiting:
                visiting.add(digest)
                stack.extend(pending)
                continue
            # inputs named (or part of a cycle / missing: load_graph rejects those later)
            names[digest] = default_name(op, [names.get(i.digest, i.digest) for i in op.inputs])
            visiting.discard(digest)
            stack.pop()
    return names


def check_entitlements(head: GraphHead, granted: Collection[str]) -> None:
    """Refuse the graph when a vertex needs an entitlement ``granted`` lacks.

    Like BuildKit, this runs when the graph is loaded, before any cache lookup, so a step
    that was cached by a build that had the entitlement is still refused without it.
    """
    seen: set[int] = set()
    stack = [head.vertex]
    while stack:
        vertex = stack.pop()
        if id(vertex) in seen:
            continue
        seen.add(id(vertex))
        needed = getattr(vertex.op, "required_entitlements", ())
        for name in needed:
            if name not in granted:
                raise SolveError(
                    f"{name} is not allowed (grant the {name} entitlement to use it)",
                    vertex.digest,
                    vertex.name,
                )
        stack.extend(v for v, _ in vertex.inputs)
