"""FileOp: chained file actions (mkdir, mkfile, rm, copy) applied to a state."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from bkcore.errors import DefinitionError
from bkcore.llb import paths, pb
from bkcore.llb.pbmake import make
from bkcore.llb.state import State
from bkcore.llb.vertex import (
    InputTable,
    MarshalContext,
    Marshalled,
    OpMeta,
    Output,
    Vertex,
    unique_outputs,
)


@dataclass(frozen=True, slots=True)
class UserRef:
    """A user or group, by name (resolved in the target's /etc/passwd or /etc/group) or id."""

    name: str = ""
    id: int | None = None

    def to_pb(self, base: int) -> pb.UserOpt:
        if self.id is not None:
            return make(pb.UserOpt, by_id=self.id)
        return make(pb.UserOpt, by_name=make(pb.NamedUserOpt, name=self.name, input=base))


@dataclass(frozen=True, slots=True)
class Chown:
    """Owner of created files; ``Chown.parse("1000:1000")`` or ``Chown.parse("app:app")``."""

    user: UserRef | None = None
    group: UserRef | None = None

    @classmethod
    def parse(cls, spec: str | int) -> Chown:
        if isinstance(spec, int):
            return cls(UserRef(id=spec))
        parts = spec.split(":", 1)
        refs = [_user_ref(p) for p in parts]
        return cls(refs[0], refs[1] if len(refs) > 1 else None)

    def to_pb(self, base: int) -> pb.ChownOpt:
        fields: dict[str, pb.UserOpt] = {}
        if self.user is not None:
            fields["user"] = self.user.to_pb(base)
        if self.group is not None:
            fields["group"] = self.group.to_pb(base)
        return make(pb.ChownOpt, **fields)


def _user_ref(text: str) -> UserRef:
    if text.isdigit() and int(text) < 2**32:
        return UserRef(id=int(text))
    return UserRef(name=text)


Owner = Chown | str | int | None
Timestamp = _dt.datetime | int | None


class CopyOptions(TypedDict, total=False):
    """The keyword options of :func:`copy` and :meth:`FileAction.copy` (defaults: ``copy``)."""

    mode: int | None
    follow_symlinks: bool
    dir_contents_only: bool
    include_patterns: Sequence[str]
    exclude_patterns: Sequence[str]
    attempt_unpack: bool
    create_dest_path: bool
    allow_wildcard: bool
    allow_empty_wildcard: bool
    owner: Owner
    created: Timestamp


def _owner(owner: Owner) -> Chown | None:
    if owner is None or isinstance(owner, Chown):
        return owner
    return Chown.parse(owner)


def _timestamp(t: Timestamp) -> int:
    """Unix nanoseconds; -1 = unset (the daemon uses the current time)."""
    if t is None:
        return -1
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            raise DefinitionError("file action timestamp: use a timezone-aware datetime")
        delta = t - _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return int(t)


@dataclass(frozen=True, slots=True)
class _Mkdir:
    path: str
    mode: int
    parents: bool
    owner: Chown | None
    created: int


@dataclass(frozen=True, slots=True)
class _Mkfile:
    path: str
    mode: int
    data: bytes
    owner: Chown | None
    created: int


@dataclass(frozen=True, slots=True)
class _Rm:
    path: str
    allow_not_found: bool
    allow_wildcard: bool


@dataclass(frozen=True, slots=True)
class _Copy:
    source: State
    src: str  # already absolute (resolved against the source state's directory)
    dest: str
    mode: int | None
    follow_symlinks: bool
    dir_contents_only: bool
    include_patterns: tuple[str, ...]
    exclude_patterns: tuple[str, ...]
    attempt_unpack: bool
    create_dest_path: bool
    allow_wildcard: bool
    allow_empty_wildcard: bool
    owner: Chown | None
    created: int


_Action = _Mkdir | _Mkfile | _Rm | _Copy


@dataclass(frozen=True, slots=True)
class FileAction:
    """An immutable chain of file actions; each method returns a longer chain."""

    action: _Action
    prev: FileAction | None = None

    def chain(self) -> tuple[_Action, ...]:
        out: list[_Action] = []
        node: FileAction | None = self
        while node is not None:
            out.append(node.action)
            node = node.prev
        return tuple(reversed(out))

    def mkdir(
        self,
        path: str,
        mode: int = 0o755,
        *,
        parents: bool = False,
        owner: Owner = None,
        created: Timestamp = None,
    ) -> FileAction:
        return FileAction(
            mkdir(path, mode, parents=parents, owner=owner, created=created).action, self
        )

    def mkfile(
        self,
        path: str,
        mode: int = 0o644,
        data: bytes | str = b"",
        *,
        owner: Owner = None,
        created: Timestamp = None,
    ) -> FileAction:
        return FileAction(mkfile(path, mode, data, owner=owner, created=created).action, self)

    def rm(
        self, path: str, *, allow_not_found: bool = False, allow_wildcard: bool = False
    ) -> FileAction:
        a = rm(path, allow_not_found=allow_not_found, allow_wildcard=allow_wildcard)
        return FileAction(a.action, self)

    def copy(
        self, source: State, src: str, dest: str, **options: Unpack[CopyOptions]
    ) -> FileAction:
        return FileAction(copy(source, src, dest, **options).action, self)


def mkdir(
    path: str,
    mode: int = 0o755,
    *,
    parents: bool = False,
    owner: Owner = None,
    created: Timestamp = None,
) -> FileAction:
    """Create directory ``path`` (``parents``: like ``mkdir -p``)."""
    return FileAction(_Mkdir(path, mode & 0o777, parents, _owner(owner), _timestamp(created)))


def mkfile(
    path: str,
    mode: int = 0o644,
    data: bytes | str = b"",
    *,
    owner: Owner = None,
    created: Timestamp = None,
) -> FileAction:
    """Create (or replace) file ``path`` holding ``data`` (a str is encoded as UTF-8)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return FileAction(_Mkfile(path, mode & 0o777, raw, _owner(owner), _timestamp(created)))


def rm(path: str, *, allow_not_found: bool = False, allow_wildcard: bool = False) -> FileAction:
    """Remove ``path`` (recursively)."""
    return FileAction(_Rm(path, allow_not_found, allow_wildcard))


def copy(
    source: State,
    src: str,
    dest: str,
    *,
    mode: int | None = None,
    follow_symlinks: bool = False,
    dir_contents_only: bool = False,
    include_patterns: Sequence[str] = (),
    exclude_patterns: Sequence[str] = (),
    attempt_unpack: bool = False,
    create_dest_path: bool = False,
    allow_wildcard: bool = False,
    allow_empty_wildcard: bool = False,
    owner: Owner = None,
    created: Timestamp = None,
) -> FileAction:
    """Copy ``src`` of ``source`` to ``dest`` of the state the action is applied to.

    A relative ``src`` is resolved against ``source``'s working directory, a relative
    ``dest`` against the target's; a trailing ``/`` on ``dest`` means "into this directory".
    """
    resolved = paths.clean(src)
    if not resolved.startswith("/"):
        resolved = paths.join("/", source.cwd, resolved)
    return FileAction(
        _Copy(
            source,
            resolved,
            dest,
            mode,
            follow_symlinks,
            dir_contents_only,
            tuple(include_patterns),
            tuple(exclude_patterns),
            attempt_unpack,
            create_dest_path,
            allow_wildcard,
            allow_empty_wildcard,
            _owner(owner),
            _timestamp(created),
        )
    )


class FileOp(Vertex):
    """A chain of file actions bound to the state it modifies. Built by ``State.file``."""

    __slots__ = ("_actions", "_base", "_meta", "output")

    def __init__(self, base: State, action: FileAction, *, meta: OpMeta) -> None:
        self._base = base
        self._actions = action.chain()
        self._meta = meta
        self.output = Output(self, 0, base.platform)

    def inputs(self) -> tuple[Output, ...]:
        cands = [self._base.output] + [
            a.source.output for a in self._actions if isinstance(a, _Copy)
        ]
        return unique_outputs(cands)

    def describe(self) -> str:
        return "file " + ", ".join(type(a).__name__.strip("_").lower() for a in self._actions)

    def marshal(self, ctx: MarshalContext) -> Marshalled:
        caps = {"file.base"}
        table = InputTable(ctx.input_of)
        add, inputs = table.add, table.inputs

        parent = self._base.cwd
        base_out = self._base.output
        # (input, input_is_relative, secondary, base) per action; relative = previous action
        wiring: list[tuple[int, bool, int, int]] = []
        for k, a in enumerate(self._actions):
            base_idx = add(base_out) if base_out is not None else -1
            inp, rel = (base_idx, False) if k == 0 else (k - 1, True)
            secondary = -1
            if isinstance(a, _Copy) and a.source.output is not None:
                secondary = add(a.source.output)
            wiring.append((inp, rel, secondary, max(base_idx, 0)))

        n = len(inputs)
        actions: list[pb.FileAction] = []
        last = len(self._actions) - 1
        for k, (a, (inp, rel, secondary, base_idx)) in enumerate(
            zip(self._actions, wiring, strict=True)
        ):
            owner: dict[str, pb.ChownOpt] = {}
            if not isinstance(a, _Rm) and a.owner is not None:
                owner["owner"] = self._chown(a.owner, base_idx, n)
            body: dict[str, Any]
            if isinstance(a, _Mkdir | _Mkfile):
                path = paths.resolve(parent, a.path)
                common = {"path": path, "mode": a.mode, "timestamp": a.created, **owner}
                if isinstance(a, _Mkdir):
                    body = {"mkdir": make(pb.FileActionMkDir, make_parents=a.parents, **common)}
                else:
                    body = {"mkfile": make(pb.FileActionMkFile, data=a.data, **common)}
            elif isinstance(a, _Rm):
                body = {
                    "rm": make(
                        pb.FileActionRm,
                        path=paths.resolve(parent, a.path),
                        allow_not_found=a.allow_not_found,
                        allow_wildcard=a.allow_wildcard,
                    )
                }
                if a.allow_wildcard:
                    caps.add("file.rm.wildcard")
            else:
                body = {
                    "copy": make(
                        pb.FileActionCopy,
                        src=a.src,
                        dest=paths.resolve(parent, a.dest, keep_slash=True),
                        mode=-1 if a.mode is None else a.mode,
                        follow_symlink=a.follow_symlinks,
                        dir_copy_contents=a.dir_contents_only,
                        attempt_unpack_docker_compatibility=a.attempt_unpack,
                        create_dest_path=a.create_dest_path,
                        allow_wildcard=a.allow_wildcard,
                        allow_empty_wildcard=a.allow_empty_wildcard,
                        timestamp=a.created,
                        include_patterns=list(a.include_patterns),
                        exclude_patterns=list(a.exclude_patterns),
                        **owner,
                    )
                }
                if a.include_patterns or a.exclude_patterns:
                    caps.add("file.copy.includeexcludepatterns")
            actions.append(
                make(
                    pb.FileAction,
                    input=n + inp if rel else inp,
                    secondary_input=secondary,
                    output=0 if k == last else -1,
                    **body,
                )
            )
        op = ctx.op(
            self._base.platform,
            self._meta,
            platform=True,
            inputs=inputs,
            file=make(pb.FileOp, actions=actions),
        )
        return Marshalled(op, self._meta, frozenset(caps))

    @staticmethod
    def _chown(owner: Chown, base: int, n_inputs: int) -> pb.ChownOpt:
        by_name = any(u is not None and u.id is None for u in (owner.user, owner.group))
        if by_name and n_inputs == 0:
            raise DefinitionError(
                "file action owner by name needs a base filesystem with /etc/passwd, not scratch"
            )
        return owner.to_pb(base)
