"""Named contexts: ``--opt context:NAME=VALUE`` replacing a stage, an image or a ``--from``
source (BuildKit's ``dockerui`` ``NamedContext``).

VALUE is ``docker-image://REF`` (``scratch`` allowed), ``git://...``/``git@...``, an
``http(s)://`` URL (a git repository or a file), ``oci-layout://NAME@DIGEST``,
``local:DIRNAME`` (a directory of the client, with its own ``.dockerignore``) or
``input:NAME`` (an input of the frontend request). A value for ``NAME::os/arch`` wins over
one for ``NAME`` on that platform.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bkcore import llb
from bkcore.errors import BkError, FrontendError
from bkcore.frontends.dockerfile.convert.image import parse_image
from bkcore.llb.imageref import normalize_image_ref

if TYPE_CHECKING:
    from bkcore.frontend import Bridge
    from bkcore.frontends.dockerfile.convert.options import ConvertOptions

__all__ = ["NamedContext", "familiar_name", "resolve_named_context"]

_MAX_RECURSION = 10


@dataclass
class NamedContext:
    """A resolved named context: its state and, for images, its config."""

    state: llb.State
    image: dict[str, Any] | None = None


def familiar_name(name: str) -> str:
    """``docker.io/library/alpine:latest`` -> ``alpine``; ``reg:5000/x:latest`` ->
    ``reg:5000/x`` (``reference.FamiliarString`` without ``:latest``)."""
    try:
        full = normalize_image_ref(name)
    except BkError as exc:
        raise FrontendError(f"invalid context name {name}: {exc}") from exc
    if full.startswith("docker.io/"):
        full = full[len("docker.io/") :]
        if full.startswith("library/") and full.count("/") == 1:
            full = full[len("library/") :]
    return full.removesuffix(":latest")


def _is_git(value: str) -> bool:
    if value.startswith(("git://", "git@", "ssh://")):
        return True
    if not value.startswith(("http://", "https://")):
        return False
    url = value.split("#", 1)[0]
    return url.endswith(".git")


def _git_state(value: str, keep_git_dir: bool = True) -> llb.State:
    remote, _, frag = value.partition("#")
    ref, _, subdir = frag.partition(":")
    commit = ref + (":" + subdir if subdir else "")
    return llb.git(
        remote,
        commit,
        keep_git_dir=keep_git_dir,
        custom_name="[internal] load git source " + value,
    )


async def resolve_named_context(
    name: str,
    platform: llb.Platform | None,
    opts: ConvertOptions,
    bridge: Bridge,
    default_platform: llb.Platform,
) -> NamedContext | None:
    """The named context replacing ``name`` for ``platform``, or ``None`` when none is set
    (``scratch`` and ``context`` are never replaced)."""
    if not opts.named_contexts or name.lower() in ("scratch", "context"):
        return None
    short = familiar_name(name)
    p = platform or default_platform
    with_platform = f"{short}::{p}"
    found = await _lookup(with_platform, short, platform, opts, bridge, 0)
    if found is not None:
        return found
    return await _lookup(short, short, platform, opts, bridge, 0)


async def _lookup(
    key: str,
    name: str,
    platform: llb.Platform | None,
    opts: ConvertOptions,
    bridge: Bridge,
    depth: int,
) -> NamedContext | None:
    value = opts.named_contexts.get(key)
    if value is None:
        return None
    if depth > _MAX_RECURSION:
        raise FrontendError(f"context recursion limit exceeded: {value}")
    kind, sep, rest = value.partition(":")
    if not sep:
        raise FrontendError(f"invalid context specifier {value} for {key}")
    if kind.startswith("git@"):
        kind = "git"
    if kind == "docker-image":
        return await _docker_image(key, rest.removeprefix("//"), platform, opts, bridge)
    if kind == "git":
        if not _is_git(value):
            raise FrontendError(f"invalid git context {value}")
        return NamedContext(_git_state(value))
    if kind in ("http", "https"):
        if _is_git(value):
            return NamedContext(_git_state(value))
        return NamedContext(llb.http(value, custom_name=f"[context {key}] {value}"))
    if kind == "oci-layout":
        return await _oci_layout(key, name, rest.removeprefix("//"), platform, opts, bridge)
    if kind == "local":
        return await _local(key, rest, opts, bridge)
    if kind == "input":
        return _input(key, rest, opts)
    raise FrontendError(f"unsupported context source {kind} for {key}")


async def _docker_image(
    key: str, ref: str, platform: llb.Platform | None, opts: ConvertOptions, bridge: Bridge
) -> NamedContext:
    if ref == "scratch":
        return NamedContext(llb.scratch())
    try:
        full = normalize_image_ref(ref)
    except BkError as exc:
        raise FrontendError(f"{ref}: {exc}") from exc
    dgst, data = await bridge.resolve_image_config(
        full,
        platform=str(platform) if platform is not None else None,
        resolve_mode=opts.image_resolve_mode,
    )
    img = parse_image(data, full)
    pinned = full
    if dgst and "@" not in full:
        pinned = f"{full}@{dgst}"
    st = llb.image(
        pinned,
        platform=platform,
        resolve_mode=_resolve_mode(opts.image_resolve_mode),
        custom_name=f"[context {key}] {ref}",
    ).with_image_config(data)
    return NamedContext(st, img)


async def _oci_layout(
    key: str,
    name: str,
    ref: str,
    platform: llb.Platform | None,
    opts: ConvertOptions,
    bridge: Bridge,
) -> NamedContext:
    m = re.fullmatch(r"(?P<store>[^@]+)@(?P<digest>[a-z0-9]+:[0-9a-fA-F]{32,})", ref)
    if m is None:
        raise FrontendError(f"oci-layout reference {ref!r} has no digest")
    store, dgst = m.group("store"), m.group("digest")
    try:
        dummy = normalize_image_ref(name).split("@", 1)[0]
    except BkError as exc:
        raise FrontendError(f"could not parse oci-layout reference {name!r}: {exc}") from exc
    dummy = dummy.rsplit(":", 1)[0] if dummy.rsplit("/", 1)[-1].count(":") else dummy
    dummy_ref = f"{dummy}@{dgst}"
    resolver = getattr(bridge, "resolve_oci_layout_config", None)
    data: bytes | None = None
    if resolver is not None:
        _, data = await resolver(
            dummy_ref,
            store_id=store,
            session_id=opts.session_id,
            platform=str(platform) if platform is not None else None,
        )
    st = llb.oci_layout(
        dummy_ref,
        session_id=opts.session_id,
        store_id=store,
        platform=platform,
        custom_name=f"[context {key}] OCI load from client",
    )
    if data is None:
        return NamedContext(st)
    return NamedContext(st.with_image_config(data), parse_image(data, dummy_ref))


async def _local(key: str, dirname: str, opts: ConvertOptions, bridge: Bridge) -> NamedContext:
    ignore = llb.local(
        dirname,
        session_id=opts.session_id,
        follow_paths=[".dockerignore"],
        shared_key_hint=f"context:{key}-.dockerignore",
        differ="none",
        custom_name=f"[context {key}] load .dockerignore",
    )
    excludes: list[str] = []
    res = await bridge.solve(ignore.marshal().to_pb())
    try:
        data = await bridge.read_file(res.ref, ".dockerignore")
    except (OSError, BkError):
        data = b""
    if data:
        from bkcore.frontends.dockerfile.dockerignore import read_patterns

        excludes = read_patterns(data)
    st = llb.local(
        dirname,
        session_id=opts.session_id,
        shared_key_hint=f"context:{key}",
        exclude_patterns=excludes,
        custom_name=f"[context {key}] load from client",
    )
    return NamedContext(st)


def _input(key: str, name: str, opts: ConvertOptions) -> NamedContext:
    st = opts.inputs.get(name)
    if st is None:
        raise FrontendError(f"invalid input {name} for {key}")
    cfg = opts.input_configs.get(name)
    if cfg is None:
        return NamedContext(st)
    return NamedContext(st.with_image_config(cfg), parse_image(cfg, f"input {name}"))


def _resolve_mode(mode: str) -> Literal["default", "pull", "local"]:
    if mode == "pull":
        return "pull"
    if mode == "local":
        return "local"
    return "default"


def parse_input_metadata(value: str) -> Mapping[str, bytes]:
    """``input-metadata:NAME`` values: JSON ``{key: base64 bytes}`` (Go ``map[string][]byte``)."""
    import base64

    try:
        raw = json.loads(value)
        return {str(k): base64.b64decode(v) for k, v in raw.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise FrontendError(f"failed to parse input metadata {value}") from exc
