"""``COPY`` and ``ADD``: the FileOp copy chain BuildKit v0.11's dockerfile2llb makes (dispatchCopy).

One FileOp per instruction holding one copy action per source:

* context or ``--from`` paths: ``/<src>`` copied with follow-symlinks, copy-dir-contents,
  create-dest-path, wildcards allowed (a pattern matching nothing copies nothing), and for ADD
  the Docker-compatible unpack of local archives;
* ``ADD`` of an http(s) URL: an ``http`` source copied as its file name (never unpacked);
* ``ADD`` of a git URL: a ``git`` source copied whole (``--keep-git-dir`` keeps ``.git``);
* heredoc sources (``COPY <<EOF /x``): a ``mkfile`` on scratch (mode 0664) copied in.

The destination is made absolute against the working directory and keeps a trailing ``/``
(also for ``.``), which makes it a directory. ``--chown`` resolves names in the destination's
``/etc/passwd``/``/etc/group``; ``--chmod`` takes octal (other values are ignored, as
v0.11 did); ``--link`` copies onto scratch and merges the result on top (a MergeOp; both ops
named and located), unless ``--chmod`` is given; ``--exclude`` patterns and ``--parents``
(keep the path below a ``/./`` pivot or the context root) become include/exclude patterns of
the copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Unpack

from bkcore import llb
from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile import instructions as ins
from bkcore.frontends.dockerfile.convert import add as _add
from bkcore.frontends.dockerfile.convert import mounts as _mounts
from bkcore.frontends.dockerfile.convert import run as _run

if TYPE_CHECKING:
    from bkcore.frontends.dockerfile.convert.state import DispatchOptions, DispatchState
    from bkcore.llb.fileop import CopyOptions


def _user_ref(text: str) -> llb.UserRef:
    """Go's ``parseUID``: ``root`` and decimal ids are ids, anything else a name."""
    if text == "root":
        return llb.UserRef(id=0)
    if text.isdigit() and int(text) < 2**31:
        return llb.UserRef(id=int(text))
    return llb.UserRef(name=text)


def parse_chown(spec: str) -> llb.Chown:
    """``user[:group]`` as BuildKit's ``llb.WithUser``."""
    user, sep, group = spec.partition(":")
    return llb.Chown(_user_ref(user), _user_ref(group) if sep else None)


def parse_chmod(spec: str) -> int | None:
    """An octal ``--chmod`` (v0.11 ignores a value that is not octal)."""
    if not spec or spec.strip("01234567"):  # Go's ParseUint: digits only, no sign or 0o
        return None
    value = int(spec, 8)
    return value if value < 2**32 else None


def copy_dest(d: DispatchState, dest_path: str) -> str:
    """The absolute destination; ``""``, ``.`` and a trailing ``/`` mean a directory."""
    p = dest_path if dest_path.startswith("/") else _mounts.llb_join(d.state.cwd, dest_path)
    dest = _mounts.llb_join("/", p)
    if dest_path in ("", ".") or dest_path.endswith("/"):
        if not dest.endswith("/"):
            dest += "/"
    return dest


def dispatch_copy(
    d: DispatchState, cmd: ins.CopyCommand | ins.AddCommand, opts: DispatchOptions
) -> None:
    """Append the COPY/ADD FileOp (or the ``--link`` merge) to ``d.state`` and history."""
    try:
        _dispatch_copy(d, cmd, opts)
    except FrontendError as exc:
        if exc.line:
            raise
        raise _run.frontend_error(opts, cmd, str(exc)) from exc


def _dispatch_copy(
    d: DispatchState, cmd: ins.CopyCommand | ins.AddCommand, opts: DispatchOptions
) -> None:
    is_add = isinstance(cmd, ins.AddCommand)
    params = cmd.sources_and_dest
    from_, parents = "", False
    checksum, keep_git_dir = "", False
    if isinstance(cmd, ins.AddCommand):
        checksum, keep_git_dir = cmd.checksum, cmd.keep_git_dir
    else:
        from_, parents = cmd.from_, cmd.parents
    source = _mounts.source_state(from_, opts, by_index=True) if from_ else opts.build_context
    excludes = tuple(cmd.exclude)

    dest = copy_dest(d, params.dest_path)
    owner = parse_chown(cmd.chown) if cmd.chown else None
    mode = parse_chmod(cmd.chmod) if cmd.chmod else None

    if checksum:
        if len(params.source_paths) != 1:
            raise FrontendError("checksum can't be specified for multiple sources")
        if not _add.is_http_source(params.source_paths[0]):
            raise FrontendError("checksum can't be specified for non-HTTP sources")
        _add.validate_checksum(checksum)

    message = ["ADD" if is_add else "COPY"]
    if parents:
        message.append("--parents")
    action: llb.FileAction | None = None

    def chain(src_state: llb.State, src: str, **kw: Unpack[CopyOptions]) -> None:
        nonlocal action
        kw["mode"] = mode
        kw["owner"] = owner
        kw["exclude_patterns"] = excludes
        if action is None:
            action = llb.copy(src_state, src, dest, **kw)
        else:
            action = action.copy(src_state, src, dest, **kw)

    # Remote sources carry the instruction's source location so a failed download or fetch
    # names the Dockerfile line (v0.11 gave them none); the http source keeps v0.11's empty
    # command description (it passed a non-Stringer to dfCmd).
    located = opts.op_meta(d, cmd)
    remote_meta = llb.OpMeta(source_locations=located.source_locations)
    http_meta = llb.OpMeta(
        description={"com.docker.dockerfile.v1.command": ""},
        source_locations=located.source_locations,
    )
    for src in params.source_paths:
        message.append(src)
        git = _add.parse_git_ref(src)
        if git is not None and not git.indistinguishable_from_local:
            if not is_add:
                raise FrontendError("source can't be a git ref for COPY")
            st = _add.git_state(git, keep_git_dir=keep_git_dir, meta=remote_meta)
            chain(st, "/", create_dest_path=True)
        elif _add.is_http_source(src):
            if not is_add:
                raise FrontendError("source can't be a URL for COPY")
            name = _add.url_filename(src)
            st = _add.http_state(src, filename=name, checksum=checksum, meta=http_meta)
            chain(st, name, create_dest_path=True)
        else:
            includes: tuple[str, ...] = ()
            path = src
            if parents:
                pivot, sep, pattern = src.partition("/./")
                if sep:
                    path = pivot
                else:
                    pattern, path = src, "/"
                includes = (_mounts.llb_join("/", pattern).lstrip("/"),)
            chain(
                source,
                _mounts.llb_join("/", path),
                follow_symlinks=True,
                dir_contents_only=True,
                include_patterns=includes,
                attempt_unpack=is_add,
                create_dest_path=True,
                allow_wildcard=True,
                allow_empty_wildcard=True,
            )

    env = d.env()
    expand_raw = _run.expander(d, opts, raw=True)
    for content in params.source_contents:
        message.append("<<" + content.path)
        data = expand_raw(content.data) if content.expand else content.data
        inline = llb.scratch().file(
            llb.mkfile(content.path, 0o664, data),
            custom_name="[internal] preparing inline document",
        )
        chain(inline, content.path, create_dest_path=True)
    message.append(params.dest_path)

    if action is None:  # nothing to copy: BuildKit fails the same way (empty FileOp)
        raise FrontendError(f"{message[0]} has no source to copy")

    name = _run.display_name(opts, cmd.original, env, raw=False)
    if cmd.link and not cmd.chmod:
        if owner is not None and any(
            u is not None and u.id is None for u in (owner.user, owner.group)
        ):
            # the linked layer is made on scratch: no /etc/passwd to resolve names in. BuildKit
            # fails later in the solver with "invalid user index: -1"; say why, with the line.
            raise FrontendError(
                f"invalid user index: -1 (--chown={cmd.chown} names a user or group, which "
                "--link cannot resolve: use numeric ids)"
            )
        # Both ops get the instruction's name, location and ignore-cache flag plus one progress
        # group (weak on the copy). v0.11.6 meant this too but copied its option slices into
        # nil slices, leaving the copy op unnamed and unlocated (a failed --link copy named no
        # Dockerfile line); later BuildKit fixed it the same way.
        group_id = llb.new_unique_id()
        group_name = d.custom_name(name, expand=False)
        link_name = d.custom_name("LINK " + name, expand=False, count=False)
        base_meta = opts.op_meta(d, cmd, custom_name=group_name)
        copy_meta = base_meta.merged(
            llb.OpMeta(progress_group=llb.ProgressGroup(group_id, group_name, True))
        )
        merge_meta = base_meta.merged(
            llb.OpMeta(
                description={llb.CUSTOM_NAME: link_name},
                progress_group=llb.ProgressGroup(group_id, group_name, False),
            )
        )
        layer = llb.scratch().file(action, meta=copy_meta)
        merged = llb.merge([d.state, layer], meta=merge_meta)
        d.state = d.state.with_output(merged.output)
    else:
        meta = opts.op_meta(d, cmd, custom_name=d.custom_name(name, expand=False))
        d.state = d.state.file(action, meta=meta)
    d.add_history(" ".join(message), False, buildkit=True)

    if from_:
        return
    for src in params.source_paths:
        if is_add and src.startswith(("http://", "https://")):
            continue
        d.paths.add(_mounts.llb_join("/", src))
