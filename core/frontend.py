"""What a frontend plugin is to the core (``dockerfile.v0``, ``gateway.v0`` ...).

A frontend turns a build request (options, named inputs) into LLB and asks the solver to build
it through a :class:`Bridge` -- the in-process form of BuildKit's ``LLBBridge`` service
(spec/gateway.md §1). The same interface serves frontends running in this process and, through
the daemon's gRPC bridge, frontends in containers or on the client side; nested builds (a
frontend solving with another frontend) go through it too.

A frontend returns a :class:`BuildResult`: one ref, or refs keyed by platform, and metadata
that the exporters read (spec/gateway.md §3: ``containerimage.config``,
``containerimage.config/<platform>``, ``refs.platforms``, ``source.date.epoch`` ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bkcore.llb import pb
    from bkcore.solver.types import Result

__all__ = [
    "META_IMAGE_CONFIG",
    "META_PLATFORMS",
    "META_SOURCE_DATE_EPOCH",
    "Bridge",
    "BuildResult",
    "FileStat",
    "Frontend",
    "FrontendRequest",
]

#: Result metadata key of the image config JSON (per platform: ``META_IMAGE_CONFIG + "/" + p``).
META_IMAGE_CONFIG = "containerimage.config"
#: Result metadata key of the platforms of a multi-platform result (JSON, spec/gateway.md §3).
META_PLATFORMS = "refs.platforms"
#: Result metadata key of the build's SOURCE_DATE_EPOCH (decimal Unix seconds).
META_SOURCE_DATE_EPOCH = "source.date.epoch"


@dataclass(slots=True)
class BuildResult:
    """What a solve or a frontend returns (gateway ``Result``).

    Exactly one of ``ref`` (``None`` is an empty result, ``scratch``) or ``refs`` (keyed by
    platform string such as ``linux/amd64``) is meaningful: ``refs`` is ``None`` for a
    single-ref result. The refs belong to the bridge that produced them: it releases them when
    the build ends, so a frontend never releases a ref it returns.
    """

    ref: Result | None = None
    refs: dict[str, Result | None] | None = None
    metadata: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FileStat:
    """One entry of ``read_dir`` / ``stat_file`` (fsutil ``Stat``): ``path`` relative to the
    directory read (base name for ``read_dir``), ``mode`` with Go's ``os.FileMode`` type bits
    as in spec/session.md §5.1, ``mod_time`` in nanoseconds."""

    path: str
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    mod_time: int = 0
    linkname: str = ""


@dataclass(frozen=True, slots=True)
class FrontendRequest:
    """What a frontend is asked to build: its options (``--opt k=v``, ``FrontendOpt``), its
    named inputs (``FrontendInputs``, for ``context:NAME=input:...``), the session of the
    build's client, and the platforms the workers run (first = default)."""

    opts: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, pb.Definition] = field(default_factory=dict)
    session_id: str = ""
    worker_platforms: Sequence[str] = ("linux/amd64",)


class Bridge(Protocol):
    """The solver as a frontend sees it (LLBBridge in-process)."""

    async def solve(
        self,
        definition: pb.Definition | None = None,
        *,
        frontend: str = "",
        frontend_opts: Mapping[str, str] | None = None,
        frontend_inputs: Mapping[str, pb.Definition] | None = None,
    ) -> BuildResult:
        """Build ``definition`` (its refs are evaluated), or run the nested ``frontend`` with
        ``frontend_opts`` and return its result. Errors are :class:`bkcore.errors.BkError`
        (``SolveError`` naming the vertex) and leave nothing to release."""
        ...

    async def resolve_image_config(
        self, ref: str, *, platform: str | None = None, resolve_mode: str = "default"
    ) -> tuple[str, bytes]:
        """The manifest digest and config JSON of image ``ref`` for ``platform`` (the
        default platform when ``None``); ``resolve_mode`` is ``default|pull|local``."""
        ...

    async def read_file(
        self, ref: Result | None, path: str, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        """Bytes of ``path`` inside ``ref`` (resolved inside the ref's root);
        ``FileNotFoundError`` when it is missing."""
        ...

    async def read_dir(
        self, ref: Result | None, path: str, *, include_pattern: str = ""
    ) -> list[FileStat]:
        """Entries of directory ``path`` in ``ref``, sorted by name, optionally filtered by a
        ``filepath.Match`` pattern."""
        ...

    async def stat_file(self, ref: Result | None, path: str) -> FileStat:
        """Stat of ``path`` in ``ref`` (not following a final symlink)."""
        ...

    def warn(self, vertex: str, short: str, *, detail: Sequence[str] = (), line: int = 0) -> None:
        """A build warning shown by the progress renderers (``vertex`` is an op digest or
        ``""``; ``line`` is the 1-based Dockerfile line, 0 for none)."""
        ...


class Frontend(Protocol):
    """A frontend registered in the ``frontends`` registry (``dockerfile.v0``)."""

    async def solve(self, bridge: Bridge, request: FrontendRequest) -> BuildResult:
        """Build ``request`` through ``bridge``. Errors are :class:`bkcore.errors.BkError`
        (``FrontendError`` naming ``file:line`` for bad input)."""
        ...
