"""The Dockerfile as a graph of stages, converted to the LLB of the target stage
(BuildKit v0.11's ``toDispatchState``).

1. Parse; expand the global ARGs (build args win) and every stage's FROM and ``--platform``
   with them; link stages built ``FROM`` an earlier stage.
2. Register the sources of ``COPY --from`` and ``RUN --mount from=``: stages by name (and by
   index for COPY), anything else an image resolved like a FROM.
3. Choose the target, refuse circular references, resolve the base image configs of the
   stages the target needs, concurrently (named contexts first).
4. Dispatch the needed stages in Dockerfile order: base image config -> env, workdir, user;
   the base image's ONBUILD triggers; then each instruction.
5. Bind the build context (``local://context`` with the paths COPY/ADD used), apply
   ``label:`` options and the target platform to the target's config.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import re
from typing import TYPE_CHECKING, Any, Literal

from bkcore import llb
from bkcore.errors import BkError, FrontendError
from bkcore.frontends.dockerfile.convert import image as _image
from bkcore.frontends.dockerfile.convert.contexts import resolve_named_context
from bkcore.frontends.dockerfile.convert.dispatch import (
    dispatch,
    dispatch_onbuild_triggers,
    dispatch_user,
    dispatch_workdir,
)
from bkcore.frontends.dockerfile.convert.options import ConvertOptions, ConvertResult
from bkcore.frontends.dockerfile.convert.platforms import (
    PlatformOpt,
    auto_detect_platform,
    parse_platform,
    platform_args,
)
from bkcore.frontends.dockerfile.convert.state import (
    DEFAULT_PATH,
    DeferredContext,
    DispatchOptions,
    DispatchState,
)
from bkcore.llb import paths
from bkcore.llb.imageref import normalize_image_ref

if TYPE_CHECKING:
    from bkcore.frontend import Bridge

__all__ = ["dockerfile_to_llb", "register_sources"]

EMPTY_IMAGE = "scratch"
#: image names a mistyped FROM is compared with (BuildKit's commonImageNames)
_COMMON_IMAGES = tuple(
    form
    for name in ("alpine", "busybox", "centos", "debian", "golang", "ubuntu", "fedora")
    for form in (name, f"docker.io/library/{name}", f"{name}:latest")
)
_BUILTIN_ARGS = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY", "SOURCE_DATE_EPOCH"}
)


class _Graph:
    """The stages in Dockerfile order plus the images named by ``--from`` (BuildKit's
    ``dispatchStates``)."""

    def __init__(self) -> None:
        self.states: list[DispatchState] = []
        self.by_name: dict[str, DispatchState] = {}

    def add(self, ds: DispatchState) -> None:
        self.states.append(ds)
        base = self.by_name.get(ds.base_name)
        if base is not None:
            ds.base = base
        if ds.stage is not None and ds.stage.name:
            self.by_name[ds.stage.name.lower()] = ds

    def find(self, name: str) -> DispatchState | None:
        return self.by_name.get(name.lower())

    def index(self, index: int) -> DispatchState:
        if index < 0 or index >= len(self.states):
            raise FrontendError(f"invalid stage index {index}")
        return self.states[index]


def _reachable(src: DispatchState) -> set[int]:
    """Ids of the states ``src`` needs: itself, its base chain and ``--from`` sources."""
    seen: set[int] = set()
    stack: list[DispatchState | None] = [src]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        stack.append(cur.base)
        stack.extend(cur.deps)
    return seen


def _circular(states: list[DispatchState]) -> DispatchState | None:
    """The first stage (in order) from which a ``--from`` cycle is reachable."""
    done: set[int] = set()
    for root in states:
        if id(root) in done:
            continue
        on_path: set[int] = {id(root)}
        stack: list[tuple[DispatchState, list[DispatchState]]] = [(root, list(root.deps))]
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                on_path.discard(id(node))
                done.add(id(node))
                continue
            dep = pending.pop(0)
            if id(dep) in on_path:
                return root
            if id(dep) in done:
                continue
            on_path.add(id(dep))
            stack.append((dep, list(dep.deps)))
    return None


def _mount_from_values(cmd: Any) -> list[str]:
    """``from=`` of each ``--mount`` of a RUN, as BuildKit's parse-time pass reads them (only
    ``from`` is parsed before dispatch; cache mounts without it read scratch at dispatch)."""
    from bkcore.frontends.dockerfile.instructions import parse_mount

    out: list[str] = []
    for raw in getattr(cmd, "mounts", None) or ():
        src = parse_mount(str(raw), None).from_
        if src:
            out.append(src)
    return out


def _register(
    d: DispatchState,
    cmd: Any,
    lookup: Any,
    by_index: Any,
    make: Any,
    line: int,
) -> list[DispatchState]:
    sources: list[DispatchState] = []
    name = getattr(cmd, "name", "")
    if name == "copy":
        src = str(getattr(cmd, "from_", "") or "")
        if src:
            try:
                idx = int(src)
            except ValueError:
                found = lookup(src)
                sources.append(found if found is not None else make(src, line))
            else:
                sources.append(by_index(idx, line))
    elif name == "run":
        for src in _mount_from_values(cmd):
            found = lookup(src)
            sources.append(found if found is not None else make(src, line))
    for s in sources:
        d.deps[s] = None
    return sources


def register_sources(d: DispatchState, cmd: Any, opts: DispatchOptions, *, line: int) -> None:
    """Register ``--from`` sources of a command met late (an ONBUILD trigger): stages that
    exist are linked; other names become plain images (no config resolution)."""

    def lookup(name: str) -> DispatchState | None:
        return opts.stage(name)

    def by_index(idx: int, ln: int) -> DispatchState:
        found = opts.all_states.get(str(idx))
        if found is None:
            raise FrontendError(f"invalid stage index {idx}", opts.filename, ln)
        return found

    def make(name: str, ln: int) -> DispatchState:
        ds = DispatchState(stage=None, base_name=name, unregistered=True)
        named = opts.named_context(name)
        if name == EMPTY_IMAGE:
            ds.state = llb.scratch()
        elif named is not None:
            ds.state = named
        else:
            try:
                ds.state = llb.image(name, platform=d.platform)
            except BkError as exc:
                raise FrontendError(str(exc), opts.filename, ln) from exc
        ds.dispatched = True
        opts.all_states.setdefault(name.lower(), ds)
        return opts.all_states[name.lower()]

    _register(d, cmd, lookup, by_index, make, line)


def _proxy_env(build_args: dict[str, str]) -> llb.ProxyEnv | None:
    fields: dict[str, str] = {}
    for k, v in build_args.items():
        low = k.lower()
        if low in ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy"):
            fields[low] = v
    if not fields:
        return None
    return llb.ProxyEnv(**fields)


def _epoch(opts: ConvertOptions) -> _dt.datetime | None:
    value: int | None = opts.source_date_epoch
    if value is None and "SOURCE_DATE_EPOCH" in opts.build_args:
        raw = opts.build_args["SOURCE_DATE_EPOCH"]
        try:
            value = int(raw)
        except ValueError:
            raise FrontendError(f"invalid SOURCE_DATE_EPOCH: {raw}") from None
    if value is None:
        return None
    return _dt.datetime.fromtimestamp(value, _dt.UTC)


def _clamp_history(img: dict[str, Any], epoch: _dt.datetime | None) -> None:
    if epoch is None:
        return
    from bkcore.frontends.dockerfile.convert.state import go_rfc3339

    stamp = go_rfc3339(epoch)
    for h in img.get("history") or ():
        created = h.get("created")
        if not created:
            h["created"] = stamp
            continue
        text = re.sub(r"(\.\d{6})\d+", r"\1", str(created)).replace("Z", "+00:00")
        try:
            t = _dt.datetime.fromisoformat(text)
        except ValueError:
            continue
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.UTC)
        if t > epoch:
            h["created"] = stamp


def _no_cache(opts: ConvertOptions, name: str) -> bool:
    if opts.ignore_cache is True:
        return True
    if not opts.ignore_cache:
        return False
    return name.lower() in {n.lower() for n in opts.ignore_cache}


def _stage_error(exc: BaseException, filename: str, line: int) -> FrontendError:
    if isinstance(exc, FrontendError) and exc.line:
        return exc
    msg = getattr(exc, "message", None) or str(exc)
    return FrontendError(str(msg), filename, line)


async def dockerfile_to_llb(
    dockerfile: bytes, opts: ConvertOptions, bridge: Bridge
) -> ConvertResult:
    """Convert ``dockerfile`` for one target platform (BuildKit's ``Dockerfile2LLB``)."""
    from bkcore.frontends.dockerfile import instructions as ins
    from bkcore.frontends.dockerfile.parser import ParseError, parse
    from bkcore.frontends.dockerfile.shell import Lexer

    filename = opts.filename or "Dockerfile"
    if not dockerfile:
        raise FrontendError("the Dockerfile cannot be empty")
    warnings: list[str] = []

    def warn(message: str, line: int = 0) -> None:
        warnings.append(message)
        opts.warn(message, line)

    try:
        po = PlatformOpt.make(opts.target_platform, opts.build_platforms)
    except ValueError as exc:
        raise FrontendError(f"failed to parse target platform {exc}") from None
    epoch = _epoch(opts)
    build_args = dict(opts.build_args)

    meta_args: list[tuple[str, str | None]] = []
    for k, v in platform_args(po).items():
        meta_args.append((k, build_args.get(k, v)))

    try:
        parsed = parse(dockerfile)
        for w in parsed.warning_items:
            warn(w.message, w.line)
        stages, global_args = ins.parse_dockerfile(parsed.ast)
    except ParseError as exc:
        raise exc.with_filename(filename) from None
    except FrontendError as exc:
        raise _stage_error(exc, filename, exc.line) from None
    if not stages:
        raise FrontendError("dockerfile contains no stages to build", filename)

    lexer = Lexer(parsed.escape)

    def meta_map() -> dict[str, str]:
        return {k: (v if v is not None else "") for k, v in meta_args}

    global_names: set[str] = set()
    for cmd in global_args:
        for arg in cmd.args:
            global_names.add(arg.key)
            if arg.key in build_args:
                value: str | None = build_args[arg.key]
            elif arg.value is not None:
                try:
                    value = lexer.process_word(arg.value, meta_map())
                except FrontendError as exc:
                    raise _stage_error(exc, filename, cmd.start_line) from None
            else:
                value = None
            meta_args.append((arg.key, value))

    graph = _Graph()
    used_in_from: set[str] = set()
    #: named contexts that replaced a stage or an image, by the name they replaced
    named_used: dict[str, llb.State] = {}
    for i, st in enumerate(stages):
        try:
            name, used = lexer.process_word_with_matches(st.base_name, meta_map())
        except FrontendError as exc:
            raise _stage_error(exc, filename, st.start_line) from None
        if name == "":
            raise FrontendError(
                f"base name ({st.base_name}) should not be blank", filename, st.start_line
            )
        ds = DispatchState(
            stage=st,
            base_name=name,
            stage_name=st.name,
            stage_index=i,
            prefix_platform=opts.multi_platform,
            epoch=epoch,
            lexer=lexer,
        )
        used_in_from |= used
        if st.platform:
            try:
                ptext, pused = lexer.process_word_with_matches(st.platform, meta_map())
            except FrontendError as exc:
                raise _stage_error(
                    FrontendError(f"failed to process arguments for platform {st.platform}: {exc}"),
                    filename,
                    st.start_line,
                ) from None
            try:
                ds.platform = parse_platform(ptext)
            except ValueError:
                raise FrontendError(
                    f"failed to parse platform {ptext}", filename, st.start_line
                ) from None
            used_in_from |= pused
        if st.name:
            try:
                named = await resolve_named_context(st.name, ds.platform, opts, bridge, po.target)
            except BkError as exc:
                raise _stage_error(exc, filename, st.start_line) from None
            if named is not None:
                ds.noinit = True
                named_used[st.name.lower()] = named.state
                ds.state = named.state
                if named.image is not None:
                    ds.image = named.image
                    _clamp_history(ds.image, epoch)
                    if ds.image.get("architecture") and ds.image.get("os"):
                        ds.platform = llb.Platform(
                            str(ds.image["os"]),
                            str(ds.image["architecture"]),
                            str(ds.image.get("variant") or ""),
                        )
                graph.add(ds)
                continue
        if not st.name:
            ds.stage_name = f"stage-{i}"
        graph.add(ds)
        total = 1 if ds.base_name != EMPTY_IMAGE and ds.base is None else 0
        for c in st.commands:
            if c.name in ("add", "copy", "run", "workdir"):
                total += 1
        ds.cmd_total = total
        ds.ignore_cache = _no_cache(opts, st.name)

    # -- the target
    if not opts.target:
        target = graph.states[-1]
    else:
        found = graph.find(opts.target)
        if found is None:
            raise FrontendError(f"target stage {opts.target} could not be found")
        target = found

    # -- sources of COPY --from / RUN --mount from=
    unregistered: dict[str, DispatchState] = {}

    def make(name: str, line: int) -> DispatchState:
        known = unregistered.get(name.lower())
        if known is not None:  # one source per image name (BuildKit makes one per use)
            return known
        ds = DispatchState(stage=None, base_name=name, unregistered=True, epoch=epoch, lexer=lexer)
        ds.stage_index = len(graph.states)
        graph.add(ds)
        unregistered.setdefault(name.lower(), ds)
        lines[id(ds)] = line
        return ds

    def by_index(idx: int, line: int) -> DispatchState:
        try:
            return graph.index(idx)
        except FrontendError as exc:
            raise FrontendError(exc.args[0], filename, line) from None

    lines: dict[int, int] = {}
    for d in list(graph.states):
        if d.unregistered:
            continue
        d.commands = list(d.stage.commands)
        d.sources = []
        for cmd in d.commands:
            try:
                d.sources.append(_register(d, cmd, graph.find, by_index, make, cmd.start_line))
            except FrontendError as exc:
                raise _stage_error(exc, filename, cmd.start_line) from None

    bad = _circular(graph.states)
    if bad is not None:
        raise FrontendError(f"circular dependency detected on stage: {bad.stage_name}")

    if len(graph.states) == 1:
        graph.states[0].stage_name = ""
    needed = _reachable(target)
    stage_names = [s.stage_name for s in graph.states if s.stage_name]

    # -- resolve base images (concurrently), only for the stages the target needs
    resolve_mode = opts.image_resolve_mode or "default"
    if resolve_mode not in ("default", "pull", "local"):
        raise FrontendError(f"invalid image-resolve-mode: {resolve_mode}")

    # one resolution per (image, platform), shared by the stages that use it; the shared
    # tasks belong to the resolving task group
    configs: dict[tuple[str, str], asyncio.Task[tuple[str, bytes] | BkError]] = {}
    task_group: list[asyncio.TaskGroup] = []

    async def fetch_config(ref: str, platform: str) -> tuple[str, bytes] | BkError:
        try:
            return await bridge.resolve_image_config(
                ref, platform=platform, resolve_mode=resolve_mode
            )
        except BkError as exc:  # raised in every stage that waits for it, not in the group
            return exc

    async def resolve_config(ref: str, platform: str) -> tuple[str, bytes]:
        task = configs.get((ref, platform))
        if task is None:
            task = task_group[0].create_task(fetch_config(ref, platform))
            configs[(ref, platform)] = task
        got = await task
        if isinstance(got, BkError):
            raise got
        return got

    async def resolve(d: DispatchState) -> None:
        line = d.stage.start_line if d.stage is not None else lines.get(id(d), 0)
        try:
            await _resolve_base(d, reachable=id(d) in needed)
        except FrontendError as exc:
            raise _stage_error(exc, filename, line) from None
        except BkError as exc:
            raise FrontendError(f"{d.base_name}: {exc}", filename, line) from exc

    async def _resolve_base(d: DispatchState, *, reachable: bool) -> None:
        if d.base_name == EMPTY_IMAGE:
            d.state = llb.scratch().with_platform(po.target)
            d.image = _image.empty_image(po.target)
            d.platform = po.target
            return
        orig = d.base_name
        try:
            ref = normalize_image_ref(d.base_name)
        except BkError as exc:
            reason = "invalid reference format"
            if "must be lowercase" in str(exc):
                reason += ": repository name must be lowercase"
            raise FrontendError(f'failed to parse stage name "{orig}": {reason}') from None
        platform = d.platform or po.target
        d.base_name = ref
        named = await resolve_named_context(ref, platform, opts, bridge, po.target)
        if named is not None:
            d.image = named.image if named.image is not None else _image.empty_image(po.target)
            d.state = named.state.with_platform(platform)
            named_used[orig.lower()] = d.state
            d.platform = platform
            return
        is_scratch = False
        if reachable:
            try:
                dgst, data = await resolve_config(ref, str(platform))
            except BkError as exc:
                # a typo of a stage or a common image name gets "(did you mean X?)"
                from bkcore.frontends.dockerfile.instructions import suggest

                message = suggest(f"{orig}: {exc}", orig, [*stage_names, *_COMMON_IMAGES], True)
                raise FrontendError(message) from exc
            img = _image.parse_image(data, ref)
            img.pop("created", None)
            if d.platform is None and po.implicit_target:
                platform = auto_detect_platform(
                    str(img.get("os", "")),
                    str(img.get("architecture", "")),
                    platform,
                    po.build_platforms,
                )
            if dgst and "@" not in ref:
                d.base_name = f"{ref}@{dgst}"
            diff_ids = (img.get("rootfs") or {}).get("diff_ids") or []
            if not diff_ids:
                is_scratch = all(h.get("empty_layer") for h in img.get("history") or ())
            _clamp_history(img, epoch)
            d.image = img
        if is_scratch:
            d.state = llb.scratch().with_platform(platform)
        else:
            # an image named only by --from has no FROM line (BuildKit: empty SourceCode)
            src_line = d.stage.original if d.stage is not None else ""
            meta = dopts.op_meta(
                d,
                d.stage,
                custom_name=d.prefix(f"FROM {d.base_name}", env={}, platform=platform),
                df_command=src_line,
            )
            meta = llb.OpMeta(description=meta.description, source_locations=meta.source_locations)
            d.state = llb.image(
                d.base_name, platform=platform, resolve_mode=_mode(resolve_mode), meta=meta
            )
        d.platform = platform

    # the build context: a deferred local:// op bound once every COPY path is known
    deferred = DeferredContext()
    build_context = opts.context if opts.context is not None else llb.State(_output=deferred.output)
    all_states: dict[str, DispatchState] = {}
    for i, s in enumerate(graph.states):
        if s.unregistered:
            all_states.setdefault(s.base_name.lower(), s)
            continue
        all_states[str(i)] = s
        if s.stage is not None and s.stage.name:
            all_states[s.stage.name.lower()] = s
    source_map = opts.source_map or llb.SourceMap(filename, dockerfile)
    dopts = DispatchOptions(
        all_states=all_states,
        build_context=build_context,
        lexer=lexer,
        filename=filename,
        session_id=opts.session_id,
        cache_mount_ns=opts.cache_mount_ns,
        extra_hosts=tuple(opts.extra_hosts),
        shm_size=opts.shm_size,
        ulimits=tuple(llb.Ulimit(n, s, h) for n, s, h in opts.ulimits),
        cgroup_parent=opts.cgroup_parent,
        force_network=opts.force_network,
        hostname=opts.hostname,
        target_platform=po.target,
        build_platform=po.build,
        build_platforms=po.build_platforms,
        source_map=source_map,
        proxy_env=_proxy_env(build_args),
        build_arg_values=build_args,
        meta_args=meta_args,
        named_contexts=named_used,
        warn=warn,
    )

    try:
        async with asyncio.TaskGroup() as tg:
            task_group.append(tg)
            for d in graph.states:
                if d.base is None and not d.noinit:
                    tg.create_task(resolve(d))
    except* FrontendError as group:
        # one clear error: the first stage (by line) that failed
        errors = [e for e in _leaves(group) if isinstance(e, FrontendError)]
        raise min(errors, key=lambda e: e.line or 1 << 30) from None

    # -- dispatch, in Dockerfile order
    net = {"none": llb.NetMode.NONE, "host": llb.NetMode.HOST}.get(opts.force_network.lower())
    ctx_paths: set[str] = set()
    for d in graph.states:
        if id(d) not in needed or d.noinit:
            continue
        line = d.stage.start_line if d.stage is not None else lines.get(id(d), 0)
        if d.base is not None:
            d.state = d.base.state
            d.platform = d.base.platform
            d.image = _image.clone_image(d.base.image)
            if d.platform is not None and d.state.platform is None:
                d.state = d.state.with_platform(d.platform)
        env = list(d.config.get("Env") or [])
        if not any(e.partition("=")[0] == "PATH" for e in env):
            env.append("PATH=" + DEFAULT_PATH)
            d.config["Env"] = env
        for entry in env:
            k, _, v = entry.partition("=")
            d.state = d.state.with_env(k, v)
        if opts.hostname:
            d.state = d.state.with_hostname(opts.hostname)
        if d.config.get("WorkingDir"):
            dispatch_workdir(d, str(d.config["WorkingDir"]), dopts, d.stage, commit=False)
        if d.config.get("User"):
            dispatch_user(d, str(d.config["User"]), commit=False)
        if net is not None:
            d.state = d.state.with_network(net)
        triggers = [str(t) for t in d.config.get("OnBuild") or ()]
        if triggers:
            dispatch_onbuild_triggers(d, triggers, dopts, line)
        d.config["OnBuild"] = None
        for cmd in d.commands:
            dispatch(d, cmd, dopts)
        d.dispatched = True
        ctx_paths |= d.paths

    # -- labels, build context, platform
    if opts.labels:
        labels = target.config.get("Labels")
        if not isinstance(labels, dict):
            labels = {}
        labels.update(opts.labels)
        target.config["Labels"] = labels

    if opts.context is None:
        follow = _follow_paths(ctx_paths)
        deferred.bind(
            llb.local(
                opts.context_name or "context",
                session_id=opts.session_id,
                exclude_patterns=list(opts.excludes),
                shared_key_hint=opts.context_name or "context",
                follow_paths=follow or (),
                custom_name="[internal] load build context",
            )
        )

    if not po.implicit_target:
        target.image["os"] = po.target.os
        target.image["architecture"] = po.target.architecture
        if po.target.variant:
            target.image["variant"] = po.target.variant
        else:
            target.image.pop("variant", None)
    if not target.image.get("rootfs"):
        target.image["rootfs"] = {"type": "layers", "diff_ids": None}
    if "OnBuild" not in target.config:
        target.config["OnBuild"] = None

    _warn_unused_args(build_args, graph.states, global_names, used_in_from, warn)
    return ConvertResult(
        state=target.state, image=target.image, warnings=warnings, platform=po.target
    )


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            out.extend(_leaves(e))
        else:
            out.append(e)
    return out


def _mode(mode: str) -> Literal["default", "pull", "local"]:
    if mode == "pull":
        return "pull"
    if mode == "local":
        return "local"
    return "default"


def _follow_paths(ctx_paths: set[str]) -> list[str] | None:
    """``local.followpaths`` for the context (``normalizeContextPaths``): ``None`` when the
    whole context is used."""
    out = []
    for p in ctx_paths:
        if p == "/":
            return None
        out.append(paths.join(".", p))
    return sorted(out)


def _warn_unused_args(
    build_args: dict[str, str],
    states: list[DispatchState],
    global_names: set[str],
    used_in_from: set[str],
    warn: Any,
) -> None:
    consumed = set(global_names) | used_in_from
    for s in states:
        if s.dispatched:
            consumed |= s.used_args
    unused = sorted(
        k
        for k in build_args
        if k not in consumed
        and k.upper() not in _BUILTIN_ARGS
        and not k.startswith("BUILDKIT_")
        and k
        not in (
            "BUILDPLATFORM",
            "BUILDOS",
            "BUILDARCH",
            "BUILDVARIANT",
            "TARGETPLATFORM",
            "TARGETOS",
            "TARGETARCH",
            "TARGETVARIANT",
        )
    )
    if unused:
        warn(f"One or more build-args [{' '.join(unused)}] were not consumed", 0)
