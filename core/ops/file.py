"""The LLB file op as a solver op: cache map (spec/solver.md §2.2) and execution.

Cache map. Each action body is Go-JSON encoded (:mod:`bkcore.ops.cachejson`); a copy whose
source is a real op input has its ``src`` cut to the base name, the full path becoming a
selector of that input. Names looked up for a chown add ``/etc/passwd`` or ``/etc/group`` to
the selectors of the named input. An input that some action changes (its ``input``) gets no
selector and no content key. The others are keyed by the content of their selected paths.

Execution (llb.md §6 index space: ``i < N`` an op input, ``N + k`` action ``k``, ``-1``
scratch). Only actions that some output needs run, dependencies first, in one worker thread:

* an action's base is a new mutable snapshot on the base input (or on scratch); when the
  base is another action's result that nothing else uses, that mutable snapshot is changed in
  place instead;
* an action's result is committed when it is an output or used more than once; copy sources
  and user/group lookups read committed results (and op inputs) through read-only views;
* committed intermediates that no output is built on are deleted at the end; on failure or
  cancellation everything written is removed. A lease held for the run protects what was
  committed until the outputs are handed to the result store.

Owners by name follow BuildKit v0.11 exactly (conformance case 011): a user name sets uid and
gid from ``/etc/passwd``, a group name then sets the gid from ``/etc/group``; a name that is
not found (or a missing file) leaves the ids as they were (0 for the user), without error.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import posixpath
import tempfile
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import betterproto

from bkcore.errors import CacheError, DefinitionError
from bkcore.fs import fileops
from bkcore.fs.contenthash import ContentHasher, combine_selectors
from bkcore.fs.errors import FileOpError, PathNotFoundError
from bkcore.fs.gomatch import has_wildcards
from bkcore.fs.securepath import resolve
from bkcore.fs.users import Owner
from bkcore.llb import pb
from bkcore.llb.dump import go_quote
from bkcore.ops.cachejson import digest_of, file_document, go_json_message
from bkcore.solver.types import CacheMap, ComputeDigest, Dep, OpContext, Result

if TYPE_CHECKING:
    from bkcore.cache.refs import Lease
    from bkcore.cache.snapshots import MutableSnapshot, SnapshotStore
    from bkcore.cache.store import CacheStore
    from bkcore.engine import Engine

__all__ = ["FileOpAdapter", "Selector", "dedupe_selectors", "file_cache_map", "plan_file_op"]

_T = TypeVar("_T")


# -- cache map -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selector:
    """A path of one input that a file op reads (a copy source or a passwd/group file)."""

    path: str
    follow_links: bool = False
    wildcard: bool = False
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    @property
    def filtered(self) -> bool:
        return self.wildcard or bool(self.includes) or bool(self.excludes)


def _go_base(path: str) -> str:
    """Go ``path.Base``."""
    if not path:
        return "."
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    return stripped.rsplit("/", 1)[-1]


def _go_abs(path: str) -> str:
    """Go ``path.Join("/", path)`` (normpath keeps a leading ``//``; Go does not)."""
    cleaned = posixpath.normpath("/" + path)
    return "/" + cleaned.lstrip("/")


def _dedupe_paths(paths: Sequence[str]) -> list[str]:
    """Unique paths without those below another one (string prefix ``p + "/"``), sorted."""
    unique = set(paths)
    kept = [p for p in unique if not any(p != q and p.startswith(q + "/") for q in unique)]
    return sorted(kept)


def dedupe_selectors(selectors: Sequence[Selector]) -> list[Selector]:
    """The selectors a content key covers: plain paths de-duplicated, sorted by path."""
    plain = _dedupe_paths([s.path for s in selectors if not s.filtered and not s.follow_links])
    follow = _dedupe_paths([s.path for s in selectors if not s.filtered and s.follow_links])
    out = [Selector(p) for p in plain] + [Selector(p, follow_links=True) for p in follow]
    out += [s for s in selectors if s.filtered]
    out.sort(key=lambda s: s.path.encode())
    return out


def _default_indexes(indexes: Sequence[tuple[int, int, int]]) -> bool:
    """BuildKit's ``isDefaultIndexes``: the chain older keys were made from (no indexes).

    Its "previous action" test compares with ``len(actions) + i - 1`` (not the number of op
    inputs plus ``i - 1``); kept as is, since it decides the bytes of the key.
    """
    if not indexes:
        return False
    last = len(indexes) - 1
    for i, (inp, secondary, output) in enumerate(indexes):
        if i == 0 and inp != 0:
            return False
        if i != 0 and inp != len(indexes) + i - 1:
            return False
        if secondary not in (-1, 1):
            return False
        if output != (0 if i == last else -1):
            return False
    return True


def _named_inputs(owner: pb.ChownOpt | None) -> list[tuple[str, pb.NamedUserOpt]]:
    """(``/etc/passwd`` or ``/etc/group``, name) for each name lookup of a chown."""
    if owner is None:
        return []
    out = []
    for db, opt in (("/etc/passwd", owner.user), ("/etc/group", owner.group)):
        kind, value = betterproto.which_one_of(opt, "user")
        if kind == "by_name" and isinstance(value, pb.NamedUserOpt):
            out.append((db, value))
    return out


def _body(action: pb.FileAction) -> tuple[str, betterproto.Message]:
    kind, body = betterproto.which_one_of(action, "action")
    if not kind or not isinstance(body, betterproto.Message):
        raise DefinitionError("invalid file action: no copy, mkfile, mkdir or rm")
    return kind, body


def _owner_of(kind: str, body: betterproto.Message) -> pb.ChownOpt | None:
    if kind in ("copy", "mkfile", "mkdir"):
        owner = getattr(body, "owner", None)
        return owner if isinstance(owner, pb.ChownOpt) else None
    return None


def file_cache_map(
    file_op: pb.FileOp, num_inputs: int
) -> tuple[str, dict[int, tuple[str, list[Selector]]]]:
    """The cache-map digest and, per content-keyed input, (selector digest, selectors)."""
    selectors: dict[int, list[Selector]] = {}
    changed: set[int] = set()
    bodies: list[str] = []
    indexes: list[tuple[int, int, int]] = []
    for action in file_op.actions:
        kind, body = _body(action)
        if action.input != -1:
            changed.add(action.input)
        for db, named in _named_inputs(_owner_of(kind, body)):
            if named.input < 0:
                raise DefinitionError(f"invalid user index {named.input}")
            selectors.setdefault(named.input, []).append(Selector(db, follow_links=True))
        if kind == "copy" and isinstance(body, pb.FileActionCopy):
            if action.secondary_input != -1 and action.secondary_input < num_inputs:
                selectors.setdefault(action.secondary_input, []).append(
                    Selector(
                        body.src,
                        follow_links=body.follow_symlink,
                        wildcard=body.allow_wildcard and has_wildcards(body.src),
                        includes=tuple(body.include_patterns),
                        excludes=tuple(body.exclude_patterns),
                    )
                )
                body = copy.copy(body)
                body.src = _go_base(body.src)
        bodies.append(go_json_message(body))
        indexes.append((action.input, action.secondary_input, action.output))
    doc = file_document(bodies, None if _default_indexes(indexes) else indexes)
    deps: dict[int, tuple[str, list[Selector]]] = {}
    for idx, sels in selectors.items():
        # Lookups in an action's own result (idx >= N) are not op inputs: nothing to key.
        if idx in changed or idx >= num_inputs:
            continue
        paths = sorted((s.path.encode() for s in sels), reverse=True)
        deps[idx] = (digest_of(b"\0".join(paths)), dedupe_selectors(sels))
    return digest_of(doc), deps


#: Part of every saved checksum's name: change it when the checksum's meaning changes.
_SAVED_CHECKSUM_VERSION = "contenthash-v1"


def _saved_checksum(store: CacheStore, snapshot_id: str, doc: str) -> Path | None:
    """Where the content key ``doc`` names is kept for a committed snapshot: a file in the
    snapshot's own directory (beside its ``fs``; removed with it). A committed snapshot never
    changes and snapshot ids are never reused, so a saved key stays right: a later build (a
    new process) reuses it instead of reading every selected file again (BuildKit keeps its
    contenthash records in the ref's metadata for the same reason)."""
    try:
        num = store.snapshots.get(snapshot_id).num
    except CacheError:
        return None
    name = hashlib.sha256(doc.encode()).hexdigest()
    return store.snapshots.dir / str(num) / "contenthash" / name


def _read_saved(path: Path) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    if len(text) == 71 and text.startswith("sha256:"):
        return text
    return None


def _write_saved(path: Path, digest: str) -> None:
    """Atomically (temp + rename); a snapshot removed meanwhile just means nothing is kept."""
    try:
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(digest)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return


def _checksum(store: CacheStore, snapshot_id: str, selectors: Sequence[Selector]) -> str:
    """Blocking: the content key of ``selectors`` in a committed snapshot (saved with it)."""
    from bkcore.cache.results import uses_empty_root_header

    local = uses_empty_root_header(store, snapshot_id)
    doc = json.dumps(
        [
            _SAVED_CHECKSUM_VERSION,
            local,
            [
                [s.path, s.follow_links, s.wildcard, list(s.includes), list(s.excludes)]
                for s in selectors or [Selector("")]
            ],
        ]
    )
    saved = _saved_checksum(store, snapshot_id, doc)
    if saved is not None and (known := _read_saved(saved)) is not None:
        return known
    digest = _compute_checksum(store, snapshot_id, selectors, local)
    if saved is not None:
        _write_saved(saved, digest)
    return digest


def _compute_checksum(
    store: CacheStore, snapshot_id: str, selectors: Sequence[Selector], local: bool
) -> str:
    with _hashed(snapshot_id) as cached, store.snapshots.view(snapshot_id) as root:
        hasher = cached.hasher
        if hasher is None:
            hasher = cached.hasher = ContentHasher(os.fspath(root), empty_root_header=local)
        # Records are keyed by paths inside the snapshot: only the view's mount point moves.
        hasher.root = os.path.abspath(root)
        digests = []
        for sel in selectors or [Selector("")]:
            path = _go_abs(sel.path)
            try:
                digests.append(
                    hasher.checksum(
                        path,
                        follow_links=sel.follow_links,
                        wildcard=sel.wildcard,
                        includes=sel.includes,
                        excludes=sel.excludes,
                    )
                )
            except PathNotFoundError as exc:
                why = f"{go_quote(exc.path or path)}: not found"
                if not local:
                    why = _missing_parent(os.fspath(root), path) or why
                raise FileOpError(
                    "failed to compute cache key: failed to calculate checksum of ref"
                    f" {snapshot_id}: {why}"
                ) from exc
        return combine_selectors(digests)


class _Hashed:
    """The record cache of one committed (so immutable) snapshot, one thread at a time."""

    __slots__ = ("hasher", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hasher: ContentHasher | None = None


_HASHED: OrderedDict[str, _Hashed] = OrderedDict()
_HASHED_LOCK = threading.Lock()
_HASHED_MAX = 32


@contextmanager
def _hashed(snapshot_id: str) -> Iterator[_Hashed]:
    """The cache of ``snapshot_id``, locked. Kept for the most recently hashed snapshots, so
    ops selecting paths of one build context (or one stage) read each file once."""
    with _HASHED_LOCK:
        entry = _HASHED.pop(snapshot_id, None) or _Hashed()
        _HASHED[snapshot_id] = entry
        while len(_HASHED) > _HASHED_MAX:
            _HASHED.popitem(last=False)
    with entry.lock:
        yield entry


def _missing_parent(root: str, path: str) -> str | None:
    """BuildKit scans a snapshot from the selected path's parent: when that parent is missing
    the error is the walk's (``... no such file or directory``), else "not found"."""
    parent = posixpath.dirname(path)
    try:
        os.lstat(resolve(root, parent, follow_final=True))
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        return f"failed to walk {parent}: lstat {parent}: {reason}"
    except FileOpError:
        return None
    return None


# -- execution ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """What to run: needed actions in dependency order, and how their results are used."""

    num_inputs: int
    actions: list[pb.FileAction]
    outputs: list[int]  # outputs[o] = index of the action producing output o
    order: list[int] = field(default_factory=list)
    commit: set[int] = field(default_factory=set)  # actions whose result gets committed
    in_place: set[int] = field(default_factory=set)  # handed to its only user as its base


def _refs(action: pb.FileAction) -> tuple[int, list[int]]:
    """(base index, other indexes read: copy source, name lookups)."""
    kind, body = _body(action)
    reads = [action.secondary_input] if kind == "copy" and action.secondary_input != -1 else []
    reads += [named.input for _db, named in _named_inputs(_owner_of(kind, body))]
    return action.input, reads


def plan_file_op(file_op: pb.FileOp, num_inputs: int) -> _Plan:
    """Validate the actions like buildkitd and work out the run order (DefinitionError)."""
    actions = list(file_op.actions)
    if not actions:
        raise DefinitionError("invalid file op: no actions")
    total = num_inputs + len(actions)
    by_output: dict[int, int] = {}
    for k, action in enumerate(actions):
        for idx in (action.input, action.secondary_input):
            if not -1 <= idx < total:
                raise DefinitionError(f"invalid input index {idx}, {total} provided")
        kind, body = _body(action)
        for _db, named in _named_inputs(_owner_of(kind, body)):
            if not 0 <= named.input < total:
                raise DefinitionError(f"invalid user index {named.input}")
        if action.output != -1:
            if action.output in by_output:
                raise DefinitionError(f"duplicate output {action.output}")
            by_output[action.output] = k
    if not by_output:
        raise DefinitionError("no outputs specified")
    for o in range(len(by_output)):
        if o not in by_output:
            raise DefinitionError(f"missing output index {o}")
    plan = _Plan(num_inputs, actions, [by_output[o] for o in range(len(by_output))])
    uses: Counter[int] = Counter()
    base_uses: Counter[int] = Counter()
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def visit(k: int) -> None:
        # Iterative DFS: action chains can be long.
        stack: list[tuple[int, list[int]]] = [(k, _deps(k))]
        state[k] = 1
        while stack:
            cur, pending = stack[-1]
            if pending:
                nxt = pending.pop()
                if state.get(nxt) == 1:
                    raise DefinitionError(f"loop from index {num_inputs + nxt}")
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, _deps(nxt)))
                continue
            stack.pop()
            state[cur] = 2
            plan.order.append(cur)
            base, reads = _refs(actions[cur])
            base_uses[base] += 1
            uses.update([base, *reads])

    def _deps(k: int) -> list[int]:
        base, reads = _refs(actions[k])
        return [i - num_inputs for i in reversed([base, *reads]) if i >= num_inputs]

    for k in plan.outputs:
        if k not in state:
            visit(k)
    for k in plan.order:
        idx = num_inputs + k
        if actions[k].output != -1 or uses[idx] > 1:
            plan.commit.add(k)
        elif base_uses[idx] == 1:
            plan.in_place.add(k)
    return plan


class _Cancelled(Exception):
    """The run was cancelled between two actions."""


@dataclass(slots=True)
class _Slot:
    mutable: MutableSnapshot | None = None
    committed: str | None = None


class _Run:
    """One execution of a plan on snapshots (blocking; runs in a worker thread)."""

    def __init__(
        self, plan: _Plan, store: CacheStore, inputs: Sequence[str], description: str
    ) -> None:
        self.plan = plan
        self.description = description
        self.store = store
        self.snapshots: SnapshotStore = store.snapshots
        self.inputs = list(inputs)
        self.slots: dict[int, _Slot] = {}
        self.committed: list[str] = []
        self.lease: Lease | None = None
        self.cancel = threading.Event()

    def run(self) -> list[str]:
        """Snapshot ids of the outputs (held by ``self.lease`` until :meth:`release`)."""
        self.lease = self.store.leases.create(f"fileop-{uuid.uuid4().hex}")
        ok = False
        try:
            for k in self.plan.order:
                if self.cancel.is_set():
                    raise _Cancelled
                self._apply(k)
            outs = [self.slots[k].committed for k in self.plan.outputs]
            if self.cancel.is_set():
                raise _Cancelled
            ok = True
            return [o for o in outs if o is not None]
        finally:
            self._cleanup(ok)

    def _cleanup(self, ok: bool) -> None:
        for slot in self.slots.values():
            if slot.mutable is not None:
                slot.mutable.discard()
                slot.mutable = None
        keep = {self.slots[k].committed for k in self.plan.outputs} if ok else set()
        for sid in reversed(self.committed):
            if sid in keep:
                continue
            try:
                self.snapshots.delete(sid)
            except CacheError:
                # On success: an output is built on it and it stays as that output's parent.
                # On failure: left for prune (the original error is the one to report).
                pass
        if not ok:
            self.release()

    def release(self) -> None:
        if self.lease is not None:
            self.store.leases.release(self.lease)
            self.lease = None

    def undo(self, outputs: Sequence[str]) -> None:
        """Remove what a finished run left (it was cancelled after its last action)."""
        for sid in reversed(self.committed):
            if self.snapshots.exists(sid):
                try:
                    self.snapshots.delete(sid)
                except CacheError:
                    pass  # still referenced elsewhere (e.g. adopted by another result)
        self.release()

    # -- one action --------------------------------------------------------------------

    def _base(self, k: int) -> MutableSnapshot:
        idx = self.plan.actions[k].input
        n = self.plan.num_inputs
        desc = self.description
        if idx == -1:
            mutable = self.snapshots.prepare(None, desc)
        elif idx < n:
            mutable = self.snapshots.prepare(self.inputs[idx], desc)
        else:
            slot = self.slots[idx - n]
            if slot.committed is not None:
                mutable = self.snapshots.prepare(slot.committed, desc)
            else:
                assert slot.mutable is not None and idx - n in self.plan.in_place
                mutable, slot.mutable = slot.mutable, None
                return mutable
        assert self.lease is not None
        self.lease.add("snapshot", mutable.id)
        return mutable

    def _reader(self, stack: ExitStack, idx: int) -> str:
        """A readable directory of index ``idx`` for the current action."""
        n = self.plan.num_inputs
        if idx == -1:
            return os.fspath(self.snapshots.empty)
        if idx < n:
            return os.fspath(stack.enter_context(self.snapshots.view(self.inputs[idx])))
        slot = self.slots[idx - n]
        if slot.committed is not None:
            return os.fspath(stack.enter_context(self.snapshots.view(slot.committed)))
        assert slot.mutable is not None
        return os.fspath(slot.mutable.mount())

    def _owner(self, stack: ExitStack, chown: pb.ChownOpt | None) -> Owner | None:
        if chown is None or not _present(chown):
            return None
        uid = gid = 0
        kind, value = betterproto.which_one_of(chown.user, "user")
        if kind == "by_id":
            uid = gid = int(value)  # type: ignore[arg-type]
        elif kind == "by_name" and isinstance(value, pb.NamedUserOpt):
            found = _entry_ids(self._reader(stack, value.input), "/etc/passwd", value.name)
            if found is not None:
                uid, gid = found
        kind, value = betterproto.which_one_of(chown.group, "user")
        if kind == "by_id":
            gid = int(value)  # type: ignore[arg-type]
        elif kind == "by_name" and isinstance(value, pb.NamedUserOpt):
            found = _entry_ids(self._reader(stack, value.input), "/etc/group", value.name)
            if found is not None:
                gid = found[0]
        return Owner(uid, gid)

    def _apply(self, k: int) -> None:
        action = self.plan.actions[k]
        kind, body = _body(action)
        slot = self.slots.setdefault(k, _Slot())
        slot.mutable = self._base(k)
        root = os.fspath(slot.mutable.mount())
        with ExitStack() as stack:
            if isinstance(body, pb.FileActionCopy):
                src_root = self._reader(stack, action.secondary_input)
                fileops.copy(
                    src_root,
                    body.src,
                    root,
                    body.dest,
                    owner=self._owner(stack, body.owner),
                    mode=body.mode if body.mode != -1 else None,
                    follow_symlink=body.follow_symlink,
                    dir_copy_contents=body.dir_copy_contents,
                    attempt_unpack=body.attempt_unpack_docker_compatibility,
                    create_dest_path=body.create_dest_path,
                    allow_wildcard=body.allow_wildcard,
                    allow_empty_wildcard=body.allow_empty_wildcard,
                    timestamp=body.timestamp,
                    include_patterns=body.include_patterns,
                    exclude_patterns=body.exclude_patterns,
                )
            elif isinstance(body, pb.FileActionMkDir):
                fileops.mkdir(
                    root,
                    body.path,
                    body.mode,
                    make_parents=body.make_parents,
                    owner=self._owner(stack, body.owner),
                    timestamp=body.timestamp,
                )
            elif isinstance(body, pb.FileActionMkFile):
                fileops.mkfile(
                    root,
                    body.path,
                    body.mode,
                    body.data,
                    owner=self._owner(stack, body.owner),
                    timestamp=body.timestamp,
                )
            elif isinstance(body, pb.FileActionRm):
                fileops.rm(
                    root,
                    body.path,
                    allow_not_found=body.allow_not_found,
                    allow_wildcard=body.allow_wildcard,
                )
            else:  # pragma: no cover - _body only returns the four kinds
                raise DefinitionError(f"invalid file action {kind}")
        if k in self.plan.commit:
            slot.committed = slot.mutable.commit()
            slot.mutable = None
            self.committed.append(slot.committed)


def _nothing(*_args: object) -> None:
    pass


def _present(msg: betterproto.Message) -> bool:
    return bool(msg._serialized_on_wire) or bool(bytes(msg))


def _entry_ids(root: str, db: str, name: str) -> tuple[int, int] | None:
    """Ids (third and fourth field) of the entry ``name`` of ``db`` (passwd or group) in
    ``root``; None when there is no such entry or no such file. Ids that do not parse count
    as 0, and names are never taken as numbers (like Go's ``user.ParsePasswdFilter``)."""
    try:
        path = resolve(root, db, follow_final=True)
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise FileOpError(f"cannot read {db}: {(exc.strerror or str(exc)).lower()}") from exc
    for line in text.splitlines():
        fields = line.strip().split(":")
        if fields[0] != name or not line.strip():
            continue
        ids = [int(v) if v.isdigit() else 0 for v in [*fields[2:4], "", ""][:2]]
        return ids[0], ids[1]
    return None


async def _in_thread(
    fn: Callable[[], _T], cancel: Callable[[], None], undo: Callable[[_T], None]
) -> _T:
    """Run ``fn`` in a worker thread. When cancelled: call ``cancel``, wait for ``fn``, and if
    it finished anyway run ``undo`` on its result (also waited for), then re-raise."""
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, fn)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        cancel()
        await _wait_out(fut)
        if not fut.cancelled() and fut.exception() is None:
            await _wait_out(loop.run_in_executor(None, undo, fut.result()))
        raise


async def _wait_out(fut: asyncio.Future[_T]) -> None:
    """Wait until ``fut`` is done even through further cancellations (the caller re-raises)."""
    while not fut.done():
        try:
            await asyncio.wait([fut])
        except asyncio.CancelledError:
            continue
    if not fut.cancelled():
        fut.exception()  # retrieved: a failure during cancellation is not reported twice


async def _adopt(store: CacheStore, snapshot_ids: Sequence[str]) -> list[Result]:
    """Results for committed output snapshots (the one place that makes results)."""
    from bkcore.cache.results import new_result

    out: list[Result] = []
    try:
        for sid in snapshot_ids:
            out.append(await new_result(store, sid))
    except BaseException:
        for res in out:
            await res.release()
        raise
    return out


# -- the adapter ----------------------------------------------------------------------------


class FileOpAdapter:
    """One LLB file op as a solver :class:`~bkcore.solver.types.Op`."""

    def __init__(self, op: pb.Op, digest: str, engine: Engine, platform: object = None) -> None:
        self.op = op
        self.digest = digest
        self.engine = engine
        self._num_inputs = len(op.inputs)
        try:
            self._plan = plan_file_op(op.file, self._num_inputs)
        except DefinitionError as exc:
            raise DefinitionError(str(exc), digest) from exc
        self._map: CacheMap | None = None

    @property
    def num_outputs(self) -> int:
        return len(self._plan.outputs)

    @property
    def worker(self) -> str:
        return "local"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        if self._map is None:
            try:
                digest, keyed = file_cache_map(self.op.file, self._num_inputs)
            except DefinitionError as exc:
                raise DefinitionError(str(exc), self.digest) from exc
            deps = []
            for i in range(self._num_inputs):
                if i in keyed:
                    selector, sels = keyed[i]
                    deps.append(Dep(selector=selector, compute_digest=self._content(sels)))
                else:
                    deps.append(Dep())
            self._map = CacheMap(digest=digest, deps=tuple(deps))
        return self._map, True

    def _content(self, selectors: list[Selector]) -> ComputeDigest:
        store = self.engine.store

        async def compute(result: Result) -> str | None:
            return await asyncio.to_thread(_checksum, store, result.id, selectors)

        return compute

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        store = self.engine.store
        name = ctx.vertex.name or f"file op {self.digest}"
        run = _Run(self._plan, store, [r.id for r in inputs], name)
        outputs = await _in_thread(run.run, run.cancel.set, run.undo)
        results: list[Result] = []
        try:
            results = await _adopt(store, outputs)
            await _in_thread(run.release, _nothing, _nothing)
        except BaseException:
            for res in results:
                await res.release()
            await _in_thread(lambda: run.undo(outputs), _nothing, _nothing)
            raise
        return results
