"""The ``dockerfile.v0`` frontend (BuildKit v0.11's ``dockerfile.v0``, builder.go).

:class:`DockerfileFrontend` reads the Dockerfile through the build's session
(``local://dockerfile`` with ``followpaths`` [filename, filename.dockerignore, dockerfile],
``local.sharedkeyhint=dockerfile``, ``local.differ=none``), the ignore file
(``<filename>.dockerignore`` next to the Dockerfile, else ``.dockerignore`` of the context),
maps the frontend options (spec/gateway.md §4) to ``ConvertOptions``, converts once per target
platform and solves each graph through the bridge. The result carries the image config
(``containerimage.config``, or one per platform plus ``refs.platforms`` for a multi-platform
build) for the exporters.

Errors from the converter name ``Dockerfile:LINE``; a failing step of the solved graph is
mapped back to its Dockerfile line through the definition's source map. Either way the error
gets ``detail_lines``: the offending lines of the Dockerfile, as BuildKit prints them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bkcore.errors import BkError, FrontendError, SolveError
from bkcore.frontend import (
    META_IMAGE_CONFIG,
    META_PLATFORMS,
    META_SOURCE_DATE_EPOCH,
    BuildResult,
)
from bkcore.frontends.dockerfile.convert import ConvertOptions, dockerfile_to_llb
from bkcore.frontends.dockerfile.dockerignore import DOCKERIGNORE, read_patterns
from bkcore.frontends.dockerfile.inputs import definition_state, input_configs

if TYPE_CHECKING:
    from bkcore import llb
    from bkcore.frontend import Bridge, FrontendRequest
    from bkcore.llb import pb
    from bkcore.solver.types import Result

__all__ = [
    "DEFAULT_FILENAME",
    "DockerfileFrontend",
    "FrontendOptions",
    "parse_frontend_options",
    "snippet",
]

DEFAULT_FILENAME = "Dockerfile"
DEFAULT_CONTEXT_KEY = "context"
DEFAULT_DOCKERFILE_KEY = "dockerfile"
#: Options v0.11 refuses outright.
REMOVED_OPTIONS = {
    "override-copy-image": "the override-copy-image option was removed",
    "build-arg:BUILDKIT_DISABLE_FILEOP": "BUILDKIT_DISABLE_FILEOP was removed",
}
#: The ``requestid`` option (subrequests such as ``frontend.outline``: not supported).
_SUBREQUEST = "requestid"
#: ``frontend.caps`` a request may require (``+forward`` allows a newer ``# syntax`` image).
SUPPORTED_CAPS = frozenset({"moby.buildkit.frontend.inputs", "moby.buildkit.frontend.contexts"})


@dataclasses.dataclass(frozen=True, slots=True)
class FrontendOptions:
    """The ``dockerfile.v0`` options of one request, parsed (spec/gateway.md §4)."""

    filename: str = DEFAULT_FILENAME
    context_key: str = DEFAULT_CONTEXT_KEY
    dockerfile_key: str = DEFAULT_DOCKERFILE_KEY
    target: str = ""
    build_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    platforms: tuple[str, ...] = ()
    multi_platform: bool = False
    ignore_cache: bool | frozenset[str] = False
    named_contexts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    image_resolve_mode: str = "default"
    extra_hosts: tuple[tuple[str, str], ...] = ()
    force_network: str = ""
    hostname: str = ""
    shm_size: int = 0
    ulimits: tuple[tuple[str, int, int], ...] = ()
    cgroup_parent: str = ""
    cache_mount_ns: str = ""
    source_date_epoch: int | None = None


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_frontend_options(opts: Mapping[str, str]) -> FrontendOptions:
    """Parse the request's options; a bad value is a :class:`FrontendError` naming the key."""
    for key, message in REMOVED_OPTIONS.items():
        if key in opts:
            raise FrontendError(message)
    if opts.get(_SUBREQUEST):
        raise FrontendError(f"unsupported request {opts[_SUBREQUEST]!r}")
    for cap in _csv(opts.get("frontend.caps", "")):
        name = cap.removesuffix("+forward")
        if name not in SUPPORTED_CAPS:
            raise FrontendError(f"unsupported frontend capability {name}")
    if opts.get("context") and not opts["context"].startswith("local:"):
        raise FrontendError(
            f"remote build contexts are not supported (context={opts['context']!r}): "
            "pass --local context=DIR"
        )
    build_args = {k[len("build-arg:") :]: v for k, v in opts.items() if k.startswith("build-arg:")}
    labels = {k[len("label:") :]: v for k, v in opts.items() if k.startswith("label:")}
    named = {k[len("context:") :]: v for k, v in opts.items() if k.startswith("context:")}
    for name, value in named.items():
        if not name or not value:
            raise FrontendError(f"invalid named context option context:{name}={value!r}")
    platforms = tuple(_csv(opts.get("platform", "")))
    platforms = tuple(normalize_platform(p) for p in platforms)
    multi = _truthy(opts.get("multi-platform", "")) or _truthy(
        build_args.get("BUILDKIT_MULTI_PLATFORM", "")
    )
    ignore: bool | frozenset[str] = False
    if "no-cache" in opts:
        stages = _csv(opts["no-cache"])
        ignore = frozenset(s.lower() for s in stages) if stages else True
    hosts: list[tuple[str, str]] = []
    for item in _csv(opts.get("add-hosts", "")):
        host, sep, ip = item.partition("=")
        if not sep:
            host, sep, ip = item.partition(":")
        if not sep or not host or not ip:
            raise FrontendError(f"invalid add-hosts entry {item!r}: expected host=ip")
        hosts.append((host, ip))
    network = opts.get("force-network-mode", "")
    if network not in ("", "none", "host", "sandbox"):
        raise FrontendError(f"invalid force-network-mode {network!r}")
    resolve_mode = opts.get("image-resolve-mode", "") or "default"
    if resolve_mode not in ("default", "pull", "local"):
        raise FrontendError(f"invalid image-resolve-mode {resolve_mode!r}")
    shm = opts.get("shm-size", "")
    try:
        shm_size = int(shm) if shm else 0
    except ValueError:
        raise FrontendError(f"invalid shm-size {shm!r}: expected bytes") from None
    epoch_text = build_args.get("SOURCE_DATE_EPOCH", "")
    try:
        epoch = int(epoch_text) if epoch_text else None
    except ValueError:
        raise FrontendError(f"invalid SOURCE_DATE_EPOCH {epoch_text!r}") from None
    hostname = opts.get("hostname", "") or build_args.get("BUILDKIT_SANDBOX_HOSTNAME", "")
    context_key = opts.get("contextkey", "") or DEFAULT_CONTEXT_KEY
    if opts.get("context", "").startswith("local:"):
        context_key = opts["context"][len("local:") :]
    return FrontendOptions(
        filename=opts.get("filename", "") or DEFAULT_FILENAME,
        context_key=context_key,
        dockerfile_key=opts.get("dockerfilekey", "") or DEFAULT_DOCKERFILE_KEY,
        target=opts.get("target", ""),
        build_args=build_args,
        labels=labels,
        platforms=platforms,
        multi_platform=multi,
        ignore_cache=ignore,
        named_contexts=named,
        image_resolve_mode=resolve_mode,
        extra_hosts=tuple(hosts),
        force_network=network,
        hostname=hostname,
        shm_size=shm_size,
        ulimits=_ulimits(opts.get("ulimit", "")),
        cgroup_parent=opts.get("cgroup-parent", ""),
        cache_mount_ns=build_args.get("BUILDKIT_CACHE_MOUNT_NS", ""),
        source_date_epoch=epoch,
    )


def _ulimits(value: str) -> tuple[tuple[str, int, int], ...]:
    out: list[tuple[str, int, int]] = []
    for item in _csv(value):
        name, sep, limits = item.partition("=")
        soft, _, hard = limits.partition(":")
        try:
            s = int(soft)
            h = int(hard) if hard else s
        except ValueError:
            raise FrontendError(f"invalid ulimit {item!r}: expected name=soft[:hard]") from None
        if not sep or not name:
            raise FrontendError(f"invalid ulimit {item!r}: expected name=soft[:hard]")
        out.append((name, s, h))
    return tuple(out)


def normalize_platform(value: str) -> str:
    """``os/arch[/variant]`` normalised like containerd (``x86_64`` -> ``amd64``); ``""``
    is the host's platform."""
    from bkcore.errors import DefinitionError
    from bkcore.llb import Platform

    try:
        return str(Platform.parse(value) if value else Platform.host())
    except DefinitionError as exc:
        raise FrontendError(str(exc)) from None


def _platform_json(value: str) -> dict[str, str]:
    parts = value.split("/")
    out = {"architecture": parts[1] if len(parts) > 1 else "", "os": parts[0]}
    if len(parts) > 2 and parts[2]:
        out["variant"] = parts[2]
    return out


# -- source locations and snippets ------------------------------------------------------------


def snippet(
    text: str, line: int, *, end_line: int = 0, filename: str = DEFAULT_FILENAME
) -> list[str]:
    """The lines BuildKit prints around a failing Dockerfile line::

    Dockerfile:3
    --------------------
       2 |     FROM base
       3 | >>> RUN false
    --------------------
    """
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return []
    last = max(line, min(end_line or line, len(lines)))
    first_shown = max(1, line - 2)
    last_shown = min(len(lines), last + 2)
    width = len(str(last_shown))
    out = [f"{filename}:{line}" if last == line else f"{filename}:{line}-{last}", "-" * 20]
    for n in range(first_shown, last_shown + 1):
        mark = ">>>" if line <= n <= last else "   "
        out.append(f" {n:>{width}} | {mark} {lines[n - 1]}".rstrip())
    out.append("-" * 20)
    return out


def _location(definition: pb.Definition, digest: str | None) -> tuple[int, int]:
    """(first line, last line) of the op ``digest`` in the definition's source map."""
    if not digest:
        return 0, 0
    locs = definition.source.locations.get(digest)
    if locs is None:
        return 0, 0
    for loc in locs.locations:
        for rng in loc.ranges:
            if rng.start.line > 0:
                return int(rng.start.line), int(rng.end.line or rng.start.line)
    return 0, 0


def _attach(exc: BaseException, lines: Sequence[str], data: bytes = b"") -> None:
    if lines and not getattr(exc, "detail_lines", None):
        exc.detail_lines = list(lines)  # type: ignore[attr-defined]
    if data and lines and not getattr(exc, "source_data", None):
        # the Dockerfile itself: a Go client (buildctl) prints its snippet from this
        exc.source_data = data  # type: ignore[attr-defined]


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a task group, so callers see one error, not a group."""
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


# -- the frontend ------------------------------------------------------------------------------


class DockerfileFrontend:
    """:class:`bkcore.frontend.Frontend` of ``dockerfile.v0``."""

    async def solve(self, bridge: Bridge, request: FrontendRequest) -> BuildResult:
        from bkcore import llb

        options = parse_frontend_options(request.opts)
        session_id = request.session_id
        # Both are loaded at once, as BuildKit does; the Dockerfile's own ignore file wins.
        # Both run to the end so that the error reported does not depend on timing: the
        # Dockerfile's first, then the context's.
        read, default_ignore = await asyncio.gather(
            self._read_dockerfile(bridge, options, session_id),
            self._read_context_ignore(bridge, options, session_id),
            return_exceptions=True,
        )
        for outcome in (read, default_ignore):
            if isinstance(outcome, BaseException):
                raise outcome
        assert not isinstance(read, BaseException)
        assert not isinstance(default_ignore, BaseException)
        dockerfile, ignore, source = read
        source_map = llb.SourceMap(options.filename, dockerfile, source)
        # Warnings hang on the vertex that loaded the Dockerfile, as in BuildKit.
        load_vertex = source.marshal().head or ""
        if ignore is None:
            ignore = default_ignore
        excludes = read_patterns(ignore) if ignore else []
        text = dockerfile.decode("utf-8", "replace")
        self._check_syntax(bridge, text, options.filename, load_vertex)
        platforms = list(options.platforms) or [
            normalize_platform(request.worker_platforms[0] if request.worker_platforms else "")
        ]
        multi = options.multi_platform or len(platforms) > 1
        inputs = {n: definition_state(d, n) for n, d in request.inputs.items()}
        configs = input_configs(request.opts)
        emitted: set[tuple[str, int]] = set()

        def warn(message: str, line: int = 0) -> None:
            if (message, line) in emitted:
                return
            emitted.add((message, line))
            detail = snippet(text, line, filename=options.filename) if line else []
            bridge.warn(load_vertex, message, detail=detail, line=line)

        async def build(platform: str) -> tuple[Result | None, bytes]:
            copts = ConvertOptions(
                filename=options.filename,
                target=options.target,
                build_args=dict(options.build_args),
                labels=dict(options.labels),
                target_platform=platform if options.platforms else None,
                build_platforms=list(request.worker_platforms) or [platform],
                ignore_cache=options.ignore_cache,
                context=None,
                context_name=options.context_key,
                excludes=list(excludes),
                named_contexts=dict(options.named_contexts),
                inputs=inputs,
                input_configs=configs,
                session_id=session_id,
                image_resolve_mode=options.image_resolve_mode,
                extra_hosts=list(options.extra_hosts),
                force_network=options.force_network,
                hostname=options.hostname,
                shm_size=options.shm_size,
                ulimits=list(options.ulimits),
                cgroup_parent=options.cgroup_parent,
                cache_mount_ns=options.cache_mount_ns,
                source_date_epoch=options.source_date_epoch,
                multi_platform=multi,
                source_map=source_map,
                warn=warn,
            )
            try:
                converted = await dockerfile_to_llb(dockerfile, copts, bridge)
            except FrontendError as exc:
                _attach(exc, snippet(text, exc.line, filename=options.filename), dockerfile)
                raise
            # converted.warnings were all given to `warn` already (with their lines).
            definition = converted.definition().to_pb()
            try:
                solved = await bridge.solve(definition)
            except SolveError as exc:
                raise self._located(exc, definition, text, options.filename) from exc
            return solved.ref, converted.config_json()

        # Platforms convert and build concurrently, as in BuildKit.
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(build(p)) for p in platforms]
        except BaseExceptionGroup as group:
            first = _first_error(group)
            raise first from first.__cause__  # keeps the failed step's error (wire details)
        result = BuildResult()
        refs: dict[str, Result | None] = {}
        listed: list[dict[str, Any]] = []
        for platform, task in zip(platforms, tasks, strict=True):
            ref, config = task.result()
            if multi:
                refs[platform] = ref
                result.metadata[f"{META_IMAGE_CONFIG}/{platform}"] = config
                listed.append({"ID": platform, "Platform": _platform_json(platform)})
            else:
                result.ref = ref
                result.metadata[META_IMAGE_CONFIG] = config
        if multi:
            result.refs = refs
            result.metadata[META_PLATFORMS] = json.dumps({"Platforms": listed}).encode()
        if options.source_date_epoch is not None:
            result.metadata[META_SOURCE_DATE_EPOCH] = str(options.source_date_epoch).encode()
        return result

    @staticmethod
    def _located(exc: SolveError, definition: pb.Definition, text: str, filename: str) -> BkError:
        line, end = _location(definition, exc.digest)
        if not line:
            return exc
        message = exc.message or str(exc)
        if exc.description:
            message = f"{exc.description}: {message}"
        located = FrontendError(message, filename, line)
        located.digest = exc.digest  # type: ignore[attr-defined]
        _attach(located, snippet(text, line, end_line=end, filename=filename), text.encode())
        return located

    async def _read_dockerfile(
        self, bridge: Bridge, options: FrontendOptions, session_id: str
    ) -> tuple[bytes, bytes | None, llb.State]:
        from bkcore.llb import local

        filename = options.filename
        paths = [filename, filename + ".dockerignore"]
        base = filename.rsplit("/", 1)
        lower = ""
        if base[-1] == DEFAULT_FILENAME:
            lower = "/".join([*base[:-1], DEFAULT_FILENAME.lower()])
            paths.append(lower)
        src = local(
            options.dockerfile_key,
            session_id=session_id,
            follow_paths=paths,
            shared_key_hint=options.dockerfile_key,
            differ="none",
            custom_name=f"[internal] load build definition from {filename}",
        )
        try:
            solved = await bridge.solve(src.marshal().to_pb())
        except SolveError as exc:
            raise FrontendError(f"failed to read dockerfile: {exc.message or exc}") from exc
        data: bytes | None = None
        for candidate in [filename, lower] if lower else [filename]:
            try:
                data = await bridge.read_file(solved.ref, candidate)
                break
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except OSError as exc:
                raise FrontendError(f"failed to read dockerfile: {exc}") from exc
        if data is None:
            raise FrontendError(
                f"failed to read dockerfile: open {filename}: no such file or directory"
            )
        try:
            ignore: bytes | None = await bridge.read_file(solved.ref, filename + ".dockerignore")
        except OSError:
            ignore = None
        return data, ignore, src

    async def _read_context_ignore(
        self, bridge: Bridge, options: FrontendOptions, session_id: str
    ) -> bytes | None:
        from bkcore.llb import local

        src = local(
            options.context_key,
            session_id=session_id,
            follow_paths=[DOCKERIGNORE],
            shared_key_hint=f"{options.context_key}-{DOCKERIGNORE}",
            differ="none",
            custom_name=f"[internal] load {DOCKERIGNORE}",
        )
        try:
            solved = await bridge.solve(src.marshal().to_pb())
        except SolveError as exc:
            raise FrontendError(f"failed to read {DOCKERIGNORE}: {exc.message or exc}") from exc
        try:
            return await bridge.read_file(solved.ref, DOCKERIGNORE)
        except OSError:
            return None

    @staticmethod
    def _check_syntax(bridge: Bridge, text: str, filename: str, vertex: str) -> None:
        """Warn about a ``# syntax=`` directive: the built-in frontend runs anyway."""
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.strip()
            match = re.match(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$", line)
            if not match:
                break
            if match.group(1).lower() == "syntax":
                bridge.warn(
                    vertex,
                    f"{filename}:{number}: ignoring syntax directive {match.group(2)!r}: "
                    "frontend images are not run; using the built-in dockerfile.v0",
                )
                return
