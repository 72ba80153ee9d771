"""What the Dockerfile frontend hands the converter, and what it gets back."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bkcore import llb

__all__ = ["DAEMON_CAPS", "ConvertOptions", "ConvertResult"]

#: LLB caps of the engine that change how the converter's graph is marshalled.
DAEMON_CAPS = frozenset({"exec.meta.setsdefaultpath"})


def _no_warn(message: str, line: int) -> None:
    return None


@dataclass(frozen=True)
class ConvertOptions:
    """Options of one conversion (one target platform); PLUMB fills them from the frontend
    opts (spec/gateway.md §4).

    ``context``: the main build context when the caller makes it itself; normally ``None``
    and the converter makes ``local://<context_name>`` with ``local.followpaths`` (the paths
    COPY/ADD use), ``local.excludepatterns`` (``excludes``, from .dockerignore),
    ``local.sharedkeyhint`` and ``local.session``.
    ``named_contexts``: ``context:NAME`` option values by NAME (``docker-image://``,
    ``local:``, ``oci-layout://``, git/http URLs, ``input:``); ``inputs`` holds the states of
    ``input:`` contexts and ``input_configs`` their image configs (``input-metadata:``).
    ``ignore_cache``: ``True`` for every stage, or the stage names given to ``no-cache``.
    ``multi_platform``: prefix op names with the platform (several target platforms).
    """

    filename: str = "Dockerfile"
    target: str = ""
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    target_platform: str | None = None
    build_platforms: Sequence[str] = ()
    ignore_cache: bool | frozenset[str] = False
    context: llb.State | None = None
    context_name: str = "context"
    excludes: Sequence[str] = ()
    named_contexts: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, llb.State] = field(default_factory=dict)
    input_configs: Mapping[str, bytes] = field(default_factory=dict)
    session_id: str = ""
    image_resolve_mode: str = "default"
    extra_hosts: Sequence[tuple[str, str]] = ()
    force_network: str = ""
    hostname: str = ""
    shm_size: int = 0
    ulimits: Sequence[tuple[str, int, int]] = ()
    cgroup_parent: str = ""
    cache_mount_ns: str = ""
    source_date_epoch: int | None = None
    multi_platform: bool = False
    source_map: llb.SourceMap | None = None
    warn: Callable[[str, int], None] = _no_warn


@dataclass
class ConvertResult:
    """The LLB of the target stage, its image config (JSON-ready, BuildKit's field order) and
    the warnings given. Marshal with ``state.marshal(platform=result.platform)``."""

    state: llb.State
    image: dict[str, Any]
    warnings: list[str]
    platform: llb.Platform

    def definition(self) -> llb.Definition:
        """The marshalled LLB as BuildKit's frontend sends it: default platform = the target
        platform, and the daemon's caps known (execs declare ``exec.meta.setsdefaultpath``
        instead of carrying a default PATH)."""
        return self.state.marshal(platform=self.platform, daemon_caps=DAEMON_CAPS)

    def config_json(self) -> bytes:
        """``image`` as the bytes BuildKit puts in ``containerimage.config``."""
        from bkcore.frontends.dockerfile.convert.image import marshal_image

        return marshal_image(self.image)
