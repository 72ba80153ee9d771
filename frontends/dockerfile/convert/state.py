"""The converter's per-stage state (BuildKit's ``dispatchState``) and shared options.

One :class:`DispatchState` exists per Dockerfile stage (plus one per image named by
``COPY --from=<image>``). Dispatching an instruction reads and replaces ``d.state`` (the LLB
state: filesystem + env/cwd/user of later processes) and edits ``d.image`` (the OCI image
config that ends up in ``containerimage.config``).

Conventions for the instruction handlers (``convert/dispatch.py``, ``convert/run.py``,
``convert/copy.py``):

* ``d.state`` env = image Env + ARG values in scope (ARGs reach RUN but not the config),
  exactly like BuildKit's ``d.state.AddEnv`` for ARG. Use :meth:`DispatchState.env` for
  variable expansion, :meth:`DispatchState.expand` / :meth:`DispatchState.expander`.
* History: :meth:`DispatchState.add_history`; ops that make a layer from a state (RUN, COPY,
  ADD) pass ``buildkit=True`` which appends `` # buildkit`` like BuildKit's
  ``commitToHistory``. RUN's text comes from :meth:`DispatchState.run_history`.
* Op names: :meth:`DispatchState.custom_name` (``[stage-1 2/5] RUN ...``) counts the
  instruction, so call it once per op-producing instruction (RUN, COPY, ADD, WORKDIR).
* Op metadata: :meth:`DispatchOptions.op_meta` (source location, ``ignore_cache``, the
  ``com.docker.dockerfile.v1.command`` description BuildKit puts on FROM images and RUN).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bkcore import llb
from bkcore.errors import BkError
from bkcore.llb.vertex import CUSTOM_NAME, MarshalContext, Marshalled, Output, Vertex

if TYPE_CHECKING:
    from bkcore.frontends.dockerfile.shell import Lexer

__all__ = [
    "DEFAULT_PATH",
    "HISTORY_COMMENT",
    "DeferredContext",
    "DispatchOptions",
    "DispatchState",
    "default_shell",
]

#: ``PATH`` set in every stage whose image has none (``system.DefaultPathEnv`` for Linux).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: ``comment`` of every history entry the Dockerfile frontend writes.
HISTORY_COMMENT = "buildkit.dockerfile.v0"
#: Description key BuildKit puts on FROM image sources and RUN execs.
DF_COMMAND = "com.docker.dockerfile.v1.command"


def default_shell(os_: str = "linux") -> list[str]:
    """The shell of shell-form RUN/CMD/ENTRYPOINT when the image sets no ``Shell``."""
    if os_ == "windows":
        return ["cmd", "/S", "/C"]
    return ["/bin/sh", "-c"]


def go_rfc3339(t: _dt.datetime) -> str:
    """A UTC time the way Go's ``time.Time`` marshals to JSON (RFC 3339, trimmed nanos)."""
    t = t.astimezone(_dt.UTC)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        base += ("." + f"{t.microsecond:06d}").rstrip("0")
    return base + "Z"


class DeferredContext(Vertex):
    """The main build context, whose ``local://`` op is only known after every stage was
    dispatched (its ``local.followpaths`` are the paths COPY/ADD used): BuildKit's
    ``mutableOutput``. Marshals exactly as the op it is bound to."""

    __slots__ = ("_target", "output")

    def __init__(self) -> None:
        self._target: Output | None = None
        self.output = Output(self, 0)

    def bind(self, state: llb.State) -> None:
        if state.output is None:
            raise ValueError("the build context cannot be scratch")
        self._target = state.output

    def _resolved(self) -> Vertex:
        if self._target is None:
            raise RuntimeError("build context used before it was bound")
        return self._target.vertex

    def inputs(self) -> tuple[Output, ...]:
        return self._resolved().inputs()

    def marshal(self, ctx: MarshalContext) -> Marshalled:
        return self._resolved().marshal(ctx)

    def describe(self) -> str:
        return "build context" if self._target is None else self._resolved().describe()


@dataclass(eq=False)
class DispatchState:
    """One stage being converted (BuildKit's ``dispatchState``). Compared by identity.

    ``stage`` is the parsed ``instructions.Stage`` (``None`` for an image named by
    ``COPY --from``); ``base_name`` is its (expanded, later resolved) FROM value.
    """

    stage: Any
    base_name: str
    stage_name: str = ""
    stage_index: int = -1
    state: llb.State = field(default_factory=llb.scratch)
    image: dict[str, Any] = field(default_factory=dict)
    platform: llb.Platform | None = None
    base: DispatchState | None = None
    #: set when a named context replaced the stage: nothing is dispatched for it
    noinit: bool = False
    #: an image named only by ``COPY --from`` / ``--mount from=`` (no Dockerfile stage)
    unregistered: bool = False
    #: stages (and ``unregistered`` images) this one reads, in first-use order
    deps: dict[DispatchState, None] = field(default_factory=dict)
    #: ARGs declared in this stage, in order, with the value they got (``None``: unset)
    build_args: list[tuple[str, str | None]] = field(default_factory=list)
    #: typed commands of the stage (``instructions`` classes), with their ``--from`` sources
    commands: list[Any] = field(default_factory=list)
    sources: list[list[DispatchState]] = field(default_factory=list)
    #: context paths used by COPY/ADD (absolute, cleaned) -> ``local.followpaths``
    paths: set[str] = field(default_factory=set)
    ignore_cache: bool = False
    cmd_set: bool = False
    cmd_index: int = 0
    cmd_total: int = 0
    prefix_platform: bool = False
    epoch: _dt.datetime | None = None
    lexer: Lexer | None = None
    dispatched: bool = False
    #: names of build args this stage used (unused-build-arg warning)
    used_args: set[str] = field(default_factory=set)

    # ----------------------------------------------------------------- config helpers
    @property
    def config(self) -> dict[str, Any]:
        """``image["config"]`` (created on first use)."""
        cfg = self.image.get("config")
        if not isinstance(cfg, dict):
            cfg = {}
            self.image["config"] = cfg
        return cfg

    @property
    def os(self) -> str:
        return self.platform.os if self.platform is not None else "linux"

    def env(self) -> dict[str, str]:
        """The environment later processes get (image Env + ARGs in scope), ordered."""
        out: dict[str, str] = {}
        for entry in self.state.env:
            k, _, v = entry.partition("=")
            out[k] = v
        return out

    def env_list(self) -> list[str]:
        return list(self.state.env)

    def image_env(self) -> dict[str, str]:
        """``config.Env`` as an ordered dict."""
        out: dict[str, str] = {}
        for entry in self.config.get("Env") or ():
            k, _, v = str(entry).partition("=")
            out[k] = v
        return out

    def expand(self, word: str) -> str:
        """``word`` with ``$VAR`` substituted from :meth:`env` (BuildKit's ProcessWord)."""
        if self.lexer is None:
            raise RuntimeError("dispatch state without a lexer")
        return self.lexer.process_word(word, self.env())

    def expander(self, env: Mapping[str, str] | None = None) -> Callable[[str], str]:
        """A ``word -> expanded word`` function over ``env`` (default: :meth:`env` now)."""
        lexer = self.lexer
        if lexer is None:
            raise RuntimeError("dispatch state without a lexer")
        scope = dict(self.env() if env is None else env)
        return lambda word: lexer.process_word(word, scope)

    def shell(self) -> list[str]:
        """The shell for shell-form commands: config ``Shell`` or ``/bin/sh -c``."""
        sh = self.config.get("Shell")
        if sh:
            return [str(s) for s in sh]
        return default_shell(self.os)

    def with_shell(self, args: Sequence[str]) -> list[str]:
        """Shell form: the shell plus the command line joined by spaces (``withShell``)."""
        return [*self.shell(), " ".join(args)]

    def add_history(self, created_by: str, empty_layer: bool, *, buildkit: bool = False) -> None:
        """Append a history entry (``commitToHistory``); ``buildkit`` adds `` # buildkit``
        (RUN, COPY, ADD)."""
        if buildkit:
            created_by += " # buildkit"
        entry: dict[str, Any] = {}
        if self.epoch is not None:
            entry["created"] = go_rfc3339(self.epoch)
        entry["created_by"] = created_by
        entry["comment"] = HISTORY_COMMENT
        if empty_layer:
            entry["empty_layer"] = True
        hist = self.image.get("history")
        if not isinstance(hist, list):
            hist = []
            self.image["history"] = hist
        hist.append(entry)

    def run_history(self, args: Sequence[str]) -> str:
        """``created_by`` of a RUN with final argv ``args``: ``RUN |2 A=1 B= /bin/sh -c ...``
        when ARGs are declared in the stage (BuildKit's ``runCommandString``)."""
        env = self.env()
        pairs = [f"{k}={env[k] if k in env else (v or '')}" for k, v in self.build_args]
        prefix = [f"|{len(pairs)}", *pairs] if pairs else []
        return "RUN " + " ".join([*prefix, *args])

    # ----------------------------------------------------------------- op naming
    def custom_name(
        self, text: str, *, expand: bool = True, raw_quotes: bool = False, count: bool = True
    ) -> str:
        """BuildKit's op name for an instruction: variables expanded from :meth:`env` (errors
        keep the text), the keyword upper-cased, then ``[stage-N i/n] `` (``[i/n] `` in a
        one-stage Dockerfile, with the platform first for multi-platform builds).

        ``raw_quotes`` keeps quotes and unset ``$VARS`` (how RUN names are expanded).
        ``count=False`` repeats the previous index (``COPY --link``'s second op).
        """
        env = self.env()
        if expand and self.lexer is not None:
            try:
                if raw_quotes:
                    # RUN names keep quotes and unset variables (RawQuotes, SkipUnsetEnv)
                    from bkcore.frontends.dockerfile.shell import Lexer

                    raw = Lexer(self.lexer.escape, raw_quotes=True, skip_unset_env=True)
                    text = raw.process_word(text, env)
                else:
                    text = self.lexer.process_word(text, env)
            except (BkError, ValueError):  # BuildKit keeps the raw text on any error
                pass
        head, sep, rest = text.partition(" ")
        text = head.upper() + sep + rest
        return self.prefix(text, count=count)

    def prefix(
        self,
        text: str,
        *,
        count: bool = True,
        env: Mapping[str, str] | None = None,
        platform: llb.Platform | None = None,
    ) -> str:
        """``[platform stage i/n] text`` without expansion (``prefixCommand``); the platform
        part only for multi-platform builds (``platform`` defaults to the stage's)."""
        if self.cmd_total == 0:
            return text
        out = "["
        p = platform or self.platform
        if self.prefix_platform and p is not None:
            out += str(p) + _format_target(p, self.env() if env is None else env) + " "
        if self.stage_name:
            out += self.stage_name + " "
        if count:
            self.cmd_index += 1
        width = int(1 + math.log10(self.cmd_total))
        out += f"{self.cmd_index:>{width}d}/{self.cmd_total}] "
        return out + text


def _format_target(base: llb.Platform, env: Mapping[str, str]) -> str:
    """``->arm64`` when TARGET* args in the env name another platform (cross builds)."""
    os_, arch, variant = "", "", ""
    seen = False
    for k, v in env.items():
        if k == "TARGETPLATFORM":
            try:
                p = llb.Platform.parse(v)
            except BkError:  # an unparsable value is ignored like BuildKit
                continue
            os_, arch, variant, seen = p.os, p.architecture, p.variant, True
            break
        if k == "TARGETOS":
            os_, seen = v, True
        elif k == "TARGETARCH":
            arch, seen = v, True
        elif k == "TARGETVARIANT":
            variant, seen = v, True
    if not seen:
        return ""
    try:
        t = llb.Platform(os_ or base.os, arch or base.architecture, variant)
    except BkError:
        return ""
    if t.os == base.os and t.architecture != base.architecture:
        return "->" + t.architecture + ("/" + t.variant if t.variant else "")
    if t.os != base.os:
        return "->" + str(t)
    return ""


@dataclass
class DispatchOptions:
    """What every stage's dispatch shares (BuildKit's ``dispatchOpt``)."""

    #: stages by lower-cased name and by index string ("0", "1", ...)
    all_states: dict[str, DispatchState]
    #: the main build context (a deferred ``local://context``, see :class:`DeferredContext`)
    build_context: llb.State
    lexer: Lexer
    filename: str = "Dockerfile"
    session_id: str = ""
    cache_mount_ns: str = ""
    extra_hosts: Sequence[tuple[str, str]] = ()
    shm_size: int = 0
    ulimits: Sequence[llb.Ulimit] = ()
    cgroup_parent: str = ""
    force_network: str = ""
    hostname: str = ""
    target_platform: llb.Platform = field(default_factory=llb.Platform.host)
    build_platform: llb.Platform = field(default_factory=llb.Platform.host)
    build_platforms: Sequence[llb.Platform] = ()
    source_map: llb.SourceMap | None = None
    proxy_env: llb.ProxyEnv | None = None
    #: build-arg values given by the user (``--opt build-arg:K=V``)
    build_arg_values: Mapping[str, str] = field(default_factory=dict)
    #: global ARGs (before the first FROM) plus the automatic platform ARGs, with values
    meta_args: list[tuple[str, str | None]] = field(default_factory=list)
    #: named contexts (``context:NAME``) resolved to states, by lower-cased name
    named_contexts: dict[str, llb.State] = field(default_factory=dict)
    warn: Callable[[str, int], None] = field(default=lambda msg, line: None)

    def named_context(self, name: str) -> llb.State | None:
        """The state of named context ``name`` (``--opt context:NAME=``), if any."""
        return self.named_contexts.get(name.lower())

    def stage(self, name: str) -> DispatchState | None:
        """A stage by name (case-insensitive) or by index string."""
        return self.all_states.get(name.lower())

    def location(self, start_line: int, end_line: int | None = None) -> llb.SourceLocation | None:
        if self.source_map is None or start_line <= 0:
            return None
        return self.source_map.location(llb.Range(start_line, 0, end_line or start_line, 0))

    def op_meta(
        self,
        d: DispatchState,
        cmd: Any = None,
        *,
        custom_name: str | None = None,
        df_command: str | None = None,
        ignore_cache: bool | None = None,
    ) -> llb.OpMeta:
        """Metadata of an op made for instruction ``cmd``: its source location, the stage's
        ``ignore_cache``, ``custom_name`` and the ``com.docker.dockerfile.v1.command``
        description (``df_command``; BuildKit sets it on RUN execs and FROM images)."""
        desc: dict[str, str] = {}
        if df_command is not None:
            desc[DF_COMMAND] = df_command
        if custom_name is not None:
            desc[CUSTOM_NAME] = custom_name
        locs: tuple[llb.SourceLocation, ...] = ()
        if cmd is not None:
            start = int(getattr(cmd, "start_line", 0) or 0)
            end = int(getattr(cmd, "end_line", 0) or start)
            loc = self.location(start, end)
            if loc is not None:
                locs = (loc,)
        ignore = d.ignore_cache if ignore_cache is None else ignore_cache
        return llb.OpMeta(description=desc, ignore_cache=ignore, source_locations=locs)
