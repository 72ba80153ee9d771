"""The graph core of the SDK: vertices, their outputs, per-op metadata and marshal context."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from bkcore.llb import pb
from bkcore.llb.pbmake import make
from bkcore.llb.platforms import Platform

if TYPE_CHECKING:
    from bkcore.llb.state import State

CUSTOM_NAME = "llb.customname"


@dataclass(frozen=True, slots=True)
class ProgressGroup:
    """Groups vertices under one progress line (``OpMetadata.progress_group``)."""

    id: str
    name: str
    weak: bool = False


@dataclass(frozen=True, slots=True)
class Range:
    """A range of lines/characters in a source file (1-based lines, like BuildKit)."""

    start_line: int
    start_character: int = 0
    end_line: int | None = None
    end_character: int = 0

    def to_pb(self) -> pb.Range:
        end = self.start_line if self.end_line is None else self.end_line
        return make(
            pb.Range,
            start=make(pb.Position, line=self.start_line, character=self.start_character),
            end=make(pb.Position, line=end, character=self.end_character),
        )


@dataclass(frozen=True, slots=True, eq=False)
class SourceMap:
    """A source file (e.g. a Dockerfile) that ops can point into for error reporting.

    ``state``, if given, is the graph that loads the file; it is marshalled into the
    Definition's source info. Compared by identity: one object = one ``Source.infos`` entry.
    """

    filename: str
    data: bytes
    state: State | None = None

    def location(self, *ranges: Range) -> SourceLocation:
        """Where an op comes from, for ``OpMeta(source_locations=...)``."""
        return SourceLocation(self, tuple(ranges))


@dataclass(frozen=True, slots=True)
class SourceLocation:
    source_map: SourceMap
    ranges: tuple[Range, ...]


@dataclass(frozen=True, slots=True)
class OpMeta:
    """Per-op options that are not part of the op body.

    ``description``, ``ignore_cache``, ``export_cache`` and ``progress_group`` go to
    ``Definition.metadata`` (not hashed); ``worker_filters`` go to ``Op.constraints`` (hashed).
    """

    description: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ignore_cache: bool = False
    export_cache: bool | None = None
    progress_group: ProgressGroup | None = None
    worker_filters: tuple[str, ...] = ()
    source_locations: tuple[SourceLocation, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "description", MappingProxyType(dict(self.description)))
        object.__setattr__(self, "worker_filters", tuple(self.worker_filters))
        object.__setattr__(self, "source_locations", tuple(self.source_locations))

    @classmethod
    def build(
        cls, meta: OpMeta | None, custom_name: str | None, ignore_cache: bool = False
    ) -> OpMeta:
        """Combine the ``meta=``, ``custom_name=`` and ``ignore_cache=`` builder arguments."""
        base = meta or cls()
        if custom_name is None and not ignore_cache:
            return base
        desc = dict(base.description)
        if custom_name is not None:
            desc[CUSTOM_NAME] = custom_name
        return cls(
            description=desc,
            ignore_cache=base.ignore_cache or ignore_cache,
            export_cache=base.export_cache,
            progress_group=base.progress_group,
            worker_filters=base.worker_filters,
            source_locations=base.source_locations,
        )

    def merged(self, other: OpMeta) -> OpMeta:
        """``self`` overlaid with ``other`` (Go's ``mergeMetadata``; filters concatenate)."""
        return OpMeta(
            description={**self.description, **other.description},
            ignore_cache=self.ignore_cache or other.ignore_cache,
            export_cache=other.export_cache
            if other.export_cache is not None
            else self.export_cache,
            progress_group=other.progress_group or self.progress_group,
            worker_filters=self.worker_filters + other.worker_filters,
            source_locations=self.source_locations + other.source_locations,
        )

    def to_pb(self, caps: Iterable[str]) -> pb.OpMetadata:
        fields: dict[str, Any] = {}
        if self.export_cache is not None:
            fields["export_cache"] = make(pb.ExportCache, value=self.export_cache)
        if self.progress_group is not None:
            g = self.progress_group
            fields["progress_group"] = make(pb.ProgressGroup, id=g.id, name=g.name, weak=g.weak)
        return make(
            pb.OpMetadata,
            ignore_cache=self.ignore_cache,
            description=dict(self.description),
            caps=dict.fromkeys(sorted(set(caps)), True),
            **fields,
        )


@dataclass(frozen=True, slots=True, eq=False)
class Output:
    """Output ``index`` of ``vertex``. Compared by identity; the marshaller dedups by digest."""

    vertex: Vertex
    index: int
    platform: Platform | None = None


@dataclass(frozen=True, slots=True)
class MarshalContext:
    """What a vertex needs while it is marshalled."""

    platform: Platform
    local_unique_id: str
    meta: OpMeta
    input_of: Callable[[Output], pb.Input]
    daemon_caps: frozenset[str] | None = None

    def op(
        self, own_platform: Platform | None, meta: OpMeta, *, platform: bool, **fields: Any
    ) -> pb.Op:
        """An ``Op`` with platform (if ``platform``) and the always-present constraints.

        ``fields`` are further ``pb.Op`` fields (``inputs=``, ``exec=``, ...), set at once.
        """
        if platform:
            p = own_platform or self.platform
            fields["platform"] = make(
                pb.Platform, architecture=p.architecture, os=p.os, variant=p.variant
            )
        filters = list(self.meta.worker_filters + meta.worker_filters)
        return make(pb.Op, constraints=make(pb.WorkerConstraints, filter=filters), **fields)


def unique_outputs(outputs: Iterable[Output | None]) -> tuple[Output, ...]:
    """``outputs`` without ``None`` and repeats (by identity), in first-seen order."""
    seen: dict[int, Output] = {}
    for o in outputs:
        if o is not None:
            seen.setdefault(id(o), o)
    return tuple(seen.values())


class InputTable:
    """The ``Op.inputs`` of one vertex being marshalled: each input once, in first-use order."""

    __slots__ = ("_index", "_input_of", "inputs")

    def __init__(self, input_of: Callable[[Output], pb.Input]) -> None:
        self._input_of = input_of
        self._index: dict[tuple[str, int], int] = {}
        self.inputs: list[pb.Input] = []

    def add(self, out: Output) -> int:
        """The index of ``out`` in :attr:`inputs` (appended on first use)."""
        inp = self._input_of(out)
        key = (inp.digest, inp.index)
        if key not in self._index:
            self._index[key] = len(self.inputs)
            self.inputs.append(inp)
        return self._index[key]


@dataclass(frozen=True, slots=True)
class Marshalled:
    """One vertex as pb: the op body, its metadata and caps.

    ``data``, when given, is the op's serialized form to write as is (an op taken from a
    received Definition keeps its bytes and digest; ``op`` is then its decoded form).
    """

    op: pb.Op
    meta: OpMeta
    caps: frozenset[str]
    data: bytes | None = None


class Vertex(abc.ABC):
    """One operation of the graph. Immutable after construction."""

    __slots__ = ()

    @abc.abstractmethod
    def inputs(self) -> tuple[Output, ...]:
        """The outputs this vertex reads, in the order the marshal walk visits them."""

    @abc.abstractmethod
    def marshal(self, ctx: MarshalContext) -> Marshalled:
        """Build the pb op; inputs are already marshalled (``ctx.input_of`` knows them)."""

    def describe(self) -> str:
        """A short human description (used in error messages)."""
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
