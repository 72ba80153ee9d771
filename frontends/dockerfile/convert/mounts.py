"""``RUN --mount``: bind, cache, tmpfs, secret and ssh mounts as BuildKit v0.11 dispatches them.

Each ``--mount`` value is parsed at dispatch time (``ins.parse_mount``) with the stage's
variables, so ``target=$DIR`` works. The rules follow BuildKit's dockerfile2llb:

* bind: from the build context (the used path is recorded for ``local.followpaths``), a stage
  or an image (``from=``); read-only by default; a writable bind gets no output (its changes
  are thrown away after the RUN).
* cache: id defaults to the cleaned target, prefixed with the cache namespace and ``/``;
  ``sharing``; ``from``/``source`` seed it; ``uid``/``gid``/``mode`` create the directory
  through a small ``mkdir /cache`` FileOp used as its seed.
* tmpfs: ``size``.
* secret: id from ``id``, ``source`` or the target's base name; target defaults to
  ``/run/secrets/<id>``; optional unless ``required``; uid/gid/mode (mode 0400 by default).
* ssh: id ``default``; target ``/run/buildkit/ssh_agent.N``; optional unless ``required``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING

from bkcore import llb
from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile import instructions as ins

if TYPE_CHECKING:
    from bkcore.frontends.dockerfile.convert.state import DispatchOptions, DispatchState

EMPTY_IMAGE = "scratch"

_SHARING = {
    "": llb.CacheSharing.SHARED,
    "shared": llb.CacheSharing.SHARED,
    "private": llb.CacheSharing.PRIVATE,
    "locked": llb.CacheSharing.LOCKED,
}


def source_state(name: str, opts: DispatchOptions, *, by_index: bool) -> llb.State:
    """The state a ``--from=name`` (COPY) or ``from=name`` (mount) refers to.

    A stage by (lower-cased) name, or for COPY by index; else what the converter registered
    for the name (an image resolved like a FROM, or a named context); else the image itself.
    """
    if name.lower() == EMPTY_IMAGE:
        return llb.scratch()
    states = opts.all_states
    found = states.get(name.lower())
    if by_index and name.isdigit():
        found = states.get(str(int(name)))
        if found is None:
            raise FrontendError(f"invalid stage index {name}")
    if found is not None:
        return found.state
    named = opts.named_context(name)
    if named is not None:
        return named
    return llb.image(name)


def parse_mounts(cmd: ins.RunCommand, expand: Callable[[str], str]) -> list[ins.Mount]:
    """The ``--mount`` values of ``cmd`` parsed with the stage's variables (``mount_specs``
    when the converter's ``cmd.expand`` already did that)."""
    if len(cmd.mount_specs) == len(cmd.mounts):
        return list(cmd.mount_specs)
    return [ins.parse_mount(value, expand) for value in cmd.mounts]


def _cache_seed(m: ins.Mount, st: llb.State) -> llb.State:
    """BuildKit's ``setCacheUIDGID``: a ``/cache`` directory with the mount's owner and mode."""
    mode = 0o755 if m.mode is None else m.mode
    owner = llb.Chown(llb.UserRef(id=m.uid or 0), llb.UserRef(id=m.gid or 0))
    return st.file(
        llb.mkdir("/cache", mode, owner=owner),
        custom_name="[internal] settings cache mount permissions",
    )


def run_mounts(d: DispatchState, mounts: list[ins.Mount], opts: DispatchOptions) -> list[llb.Mount]:
    """SDK mounts for the parsed ``--mount`` values, in Dockerfile order."""
    out: list[llb.Mount] = []
    for m in mounts:
        kind = m.type
        if kind == "secret":
            out.append(_secret(m))
            continue
        if kind == "ssh":
            out.append(_ssh(m))
            continue
        from_ = m.from_
        if not from_ and kind == "cache":
            from_ = EMPTY_IMAGE
        if kind == "tmpfs":
            st = llb.scratch()
        elif from_:
            st = source_state(from_, opts, by_index=False)
        else:
            st = opts.build_context
        target = m.target
        if not posixpath.isabs(posixpath.normpath(target or ".")):
            target = llb_join("/", d.state.cwd, target)
        if target == "/":
            raise FrontendError(f'invalid mount target "{target}"')
        selector = ""
        src = llb_join("/", m.source)
        if src != "/":
            selector = src
        elif m.uid is not None or m.gid is not None or m.mode is not None:
            st = _cache_seed(m, st)
            selector = "/cache"
        if kind == "tmpfs":
            out.append(llb.tmpfs(target, size=m.size_limit or 0))
        elif kind == "cache":
            cache_id = m.cache_id or posixpath.normpath(m.target)
            sharing = _SHARING.get(m.cache_sharing or "", llb.CacheSharing.SHARED)
            out.append(
                llb.Cache(
                    target,
                    f"{opts.cache_mount_ns}/{cache_id}",
                    sharing,
                    None if st.is_scratch else st,
                    selector,
                )
            )
        else:
            out.append(
                llb.bind(
                    target,
                    st,
                    selector=selector,
                    readonly=m.read_only,
                    no_output=not m.read_only,
                )
            )
        if not from_:  # a cache mount's implicit scratch counts as a from (as BuildKit)
            d.paths.add(llb_join("/", m.source))
    return out


def _secret(m: ins.Mount) -> llb.Secret:
    sid = m.source or m.cache_id
    if not sid:
        if not m.target:
            raise FrontendError("one of source, target required")
        sid = posixpath.basename(m.target)
    target = m.target or "/run/secrets/" + posixpath.basename(sid)
    if m.uid is not None or m.gid is not None or m.mode is not None:
        return llb.secret(
            target,
            id=sid,
            uid=m.uid or 0,
            gid=m.gid or 0,
            mode=0o400 if m.mode is None else m.mode,
            optional=not m.required,
        )
    return llb.secret(target, id=sid, optional=not m.required)


def _ssh(m: ins.Mount) -> llb.SSH:
    if m.source:
        raise FrontendError("ssh does not support source")
    return llb.ssh(
        dest=m.target,
        id=m.cache_id,
        uid=m.uid or 0,
        gid=m.gid or 0,
        mode=0o600 if m.mode is None else m.mode,
        optional=not m.required,
    )


def llb_join(*elems: str) -> str:
    """Go's ``path.Join``."""
    parts = [e for e in elems if e]
    if not parts:
        return ""
    out = posixpath.normpath("/".join(parts))
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    return out
