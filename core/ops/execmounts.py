"""Everything an exec op mounts, set up before the run and torn down after it.

:func:`prepare_mounts` walks the op's mounts in order:

* the root mount (``/``) and writable binds: a mutable snapshot on the input (or on scratch);
  a selector mounts that sub-path of it. Mounts with an output are committed, in mount order,
  by :meth:`PreparedExec.commit`; the others are thrown away.
* read-only binds: a read-only view of the input snapshot (sub-path resolved inside it, so
  ``..`` and symlinks cannot leave it), or the store's empty directory for scratch;
* cache mounts: the store's cache directory for the id (``id:<input snapshot>`` when seeded
  from an input, filled from it while empty); ``ignore_cache`` drops input-less ids first;
* tmpfs mounts; secrets (fetched from the job's session, written to a private tmpfs of this
  run only, bind-mounted read-only); SSH agent sockets forwarded from the session; secret
  environment variables.

Leaving the context undoes everything (discarding uncommitted snapshots, unmounting views and
the secret tmpfs, releasing cache mounts), also on error or cancellation.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bkcore.cache import fsutil, procs
from bkcore.cache.cachemounts import Sharing
from bkcore.errors import SessionError, SolveError
from bkcore.llb import pb
from bkcore.solver.types import OpContext, Result
from bkcore.worker import MountSpec

if TYPE_CHECKING:
    from bkcore.cache.snapshots import MutableSnapshot, SnapshotStore
    from bkcore.cache.store import CacheStore
    from bkcore.engine import Engine

__all__ = ["SECRETS_DIR", "PreparedExec", "prepare_mounts", "recover_secret_dirs"]

T = TypeVar("T")

#: Job value: cache mount ids this build already emptied for ignore_cache (id -> future).
CACHE_DROPS = "cache_mount_drops"


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


#: Directory below the store root holding one private tmpfs per running exec with secrets.
SECRETS_DIR = "exec-secrets"
_SECRETS_TMPFS_SIZE = 64 << 20
_SHARING: dict[int, Sharing] = {
    pb.CacheSharingOpt.SHARED: "shared",
    pb.CacheSharingOpt.PRIVATE: "private",
    pb.CacheSharingOpt.LOCKED: "locked",
}
_recovered: set[str] = set()


async def _uncancellable(awaitable: Awaitable[T]) -> T:
    """Await to the end even when cancelled meanwhile, then re-raise the cancellation."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


async def _in_thread(fn: Callable[[], T]) -> T:
    """Run blocking ``fn`` in a thread; a cancellation waits for it (it registers cleanups)."""
    return await _uncancellable(asyncio.to_thread(fn))


class PreparedExec:
    """The rootfs, mounts and extra environment of one run, and its output snapshots."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.rootfs = ""
        self.mounts: list[MountSpec] = []
        self.env: list[str] = []
        self.outputs: list[tuple[int, MutableSnapshot]] = []

    async def commit(self) -> dict[int, Result]:
        """Commit the output snapshots in mount order; returns output index -> result.

        All or nothing: when one commit fails, the results made so far are released.
        """
        from bkcore.cache.results import commit_result

        done: dict[int, Result] = {}
        try:
            for index, snap in self.outputs:
                done[index] = await commit_result(self.store, snap)
        except BaseException:
            for result in done.values():
                await _uncancellable(result.release())
            raise
        return done


def session_group(ctx: OpContext) -> list[str]:
    """The session ids of the jobs sharing the vertex, in job order, without repeats."""
    out: list[str] = []
    for job in ctx.jobs():
        sid = job.values.get("session")
        if isinstance(sid, str) and sid and sid not in out:
            out.append(sid)
    return out


@asynccontextmanager
async def prepare_mounts(
    engine: Engine, ctx: OpContext, exec_op: pb.ExecOp, snapshots: Sequence[str]
) -> AsyncIterator[PreparedExec]:
    """Set up every mount of ``exec_op``; ``snapshots[i]`` is input i's snapshot id."""
    store = engine.store
    prepared = PreparedExec(store)
    sync = ExitStack()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(_in_thread, sync.close)
        await _in_thread(lambda: _recover_once(store.root))
        setup = _Setup(engine, ctx, exec_op, snapshots, prepared, sync, stack)
        await setup.run()
        yield prepared


class _Setup:
    def __init__(
        self,
        engine: Engine,
        ctx: OpContext,
        exec_op: pb.ExecOp,
        snapshots: Sequence[str],
        prepared: PreparedExec,
        sync: ExitStack,
        stack: AsyncExitStack,
    ) -> None:
        self.engine = engine
        self.snaps: SnapshotStore = engine.store.snapshots
        self.ctx = ctx
        self.op = exec_op
        self.inputs = snapshots
        self.out = prepared
        self.sync = sync
        self.stack = stack
        self.views: dict[str, Path] = {}
        self.secret_dir: Path | None = None
        self.args_text = " ".join(exec_op.meta.args)

    def _input(self, m: pb.Mount) -> str | None:
        if m.input < 0:
            return None
        if m.input >= len(self.inputs):
            raise SolveError(f"mount {m.dest} uses input {m.input}, but the op has fewer inputs")
        return self.inputs[m.input]

    async def run(self) -> None:
        if not any(m.dest == "/" for m in self.op.mounts):
            raise SolveError("exec op has no root mount")
        if self.ctx.vertex.ignore_cache:
            ids = {m.cache_opt.id for m in self.op.mounts if _is_cache(m) and m.input < 0}
            await self._drop_cache_ids(ids)
        for m in self.op.mounts:
            if m.result_id:
                raise SolveError(f"mount {m.dest}: result ids (gateway results) are not supported")
            kind = m.mount_type
            if kind == pb.MountType.BIND:
                await self._bind(m)
            elif kind == pb.MountType.CACHE:
                await self._cache(m)
            elif kind == pb.MountType.TMPFS:
                size = m.tmpfs_opt.size
                self.out.mounts.append(MountSpec(m.dest, kind="tmpfs", tmpfs_size=size))
            elif kind == pb.MountType.SECRET:
                await self._secret(m)
            elif kind == pb.MountType.SSH:
                await self._ssh(m)
            else:
                raise SolveError(f"unknown mount type {int(kind)} at {m.dest}")
        for env in self.op.secretenv:
            data = await self._fetch_secret(env.id)
            if data is None:
                if env.optional:
                    continue
                raise SolveError(f"secret {env.id}: not found")  # buildkitd's wording
            self.out.env.append(f"{env.name}={os.fsdecode(data)}")

    async def _drop_cache_ids(self, ids: set[str]) -> None:
        """Empty the cache mounts ``ids`` once per build (spec/solver.md §3.3: dropped before
        the build), not at every ignore_cache exec: a later exec of the same build sees what
        an earlier one wrote. Jobs record the drops in ``values[CACHE_DROPS]`` (id -> the
        drop's future); without it (a job from an older caller) every exec drops."""
        registries = [
            drops
            for job in self.ctx.jobs()
            if isinstance(drops := job.values.get(CACHE_DROPS), dict)
        ]
        waits: list[asyncio.Future[None]] = []
        mine: dict[str, asyncio.Future[None]] = {}
        for cache_id in sorted(ids):
            known = next((r[cache_id] for r in registries if cache_id in r), None)
            if known is not None:
                waits.append(known)
                continue
            mine[cache_id] = asyncio.get_running_loop().create_future()
            for registry in registries:
                registry[cache_id] = mine[cache_id]
        mounts = self.engine.store.cache_mounts

        def drop() -> None:
            for cache_id in mine:
                mounts.drop(cache_id)

        try:
            await _in_thread(drop)
        except BaseException:
            for cache_id, fut in mine.items():
                for registry in registries:
                    registry.pop(cache_id, None)
                fut.cancel()  # waiters of this build fail below; the next exec retries
            raise
        for fut in mine.values():
            fut.set_result(None)
        for fut in waits:
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                if fut.cancelled() and not _current_task_cancelling():
                    raise SolveError("emptying a cache mount failed in another step") from None
                raise

    # -- binds ----------------------------------------------------------------------------

    def _mutable(self, parent: str | None, dest: str) -> MutableSnapshot:
        # BuildKit's description of an exec's writable mount (the image history's created_by)
        mutable = self.snaps.prepare(parent, f"mount {dest} from exec {self.args_text}")
        self.sync.callback(mutable.discard)
        return mutable

    def _view(self, snapshot: str) -> Path:
        path = self.views.get(snapshot)
        if path is None:
            path = self.sync.enter_context(self.snaps.view(snapshot))
            self.views[snapshot] = path
        return path

    async def _bind(self, m: pb.Mount) -> None:
        parent = self._input(m)
        if m.dest == "/":
            if m.selector:
                raise SolveError("the root mount cannot have a selector")

            def root() -> None:
                mutable = self._mutable(parent, m.dest)
                self.out.rootfs = os.fspath(mutable.mount())
                if m.output != -1 and not m.readonly:
                    self.out.outputs.append((m.output, mutable))

            await _in_thread(root)
            return
        if m.readonly:

            def readonly() -> str:
                base = self._view(parent) if parent is not None else self.snaps.empty
                return _subpath(base, m.selector, m.dest)

            source = await _in_thread(readonly)
            self.out.mounts.append(MountSpec(m.dest, source, readonly=True))
            return

        def writable() -> str:
            mutable = self._mutable(parent, m.dest)
            if m.output != -1:
                self.out.outputs.append((m.output, mutable))
            return _subpath(mutable.mount(), m.selector, m.dest)

        source = await _in_thread(writable)
        self.out.mounts.append(MountSpec(m.dest, source))

    # -- cache mounts ---------------------------------------------------------------------

    async def _cache(self, m: pb.Mount) -> None:
        cache_id = m.cache_opt.id
        if not cache_id:
            raise SolveError(f"cache mount {m.dest} has no id")
        parent = self._input(m)
        key = cache_id if parent is None else f"{cache_id}:{parent}"
        sharing = _SHARING.get(int(m.cache_opt.sharing))
        if sharing is None:
            raise SolveError(f"cache mount {m.dest}: unknown sharing mode {m.cache_opt.sharing}")
        data = await self.stack.enter_async_context(
            self.engine.store.cache_mounts.acquire(key, sharing)
        )
        if parent is not None:

            def seed() -> None:
                if any(os.scandir(data)):
                    return
                from bkcore.cache.fsutil import copy_tree

                with self.snaps.view(parent) as view:
                    source = Path(_subpath(view, m.selector, m.dest))
                    if source.is_dir():
                        copy_tree(source, data)

            await _in_thread(seed)
        self.out.mounts.append(MountSpec(m.dest, os.fspath(data), readonly=m.readonly))

    # -- secrets and ssh ------------------------------------------------------------------

    async def _fetch_secret(self, secret_id: str) -> bytes | None:
        """The secret's bytes from the first session of the build that has it, or None."""
        from bkcore.session.secrets import SecretNotFoundError, get_secret

        group = session_group(self.ctx)
        if not group:
            return None
        try:
            return await self.engine.sessions.any(
                group, lambda conn: get_secret(conn.caller, secret_id)
            )
        except SecretNotFoundError:
            return None

    def _new_secret_dir(self) -> Path:
        from bkcore.cache.mount import Mount, mount, unmount

        pid, started = procs.me()
        base = Path(self.engine.store.root) / SECRETS_DIR
        base.mkdir(mode=0o700, exist_ok=True)
        target = base / f"{pid}-{started}-{secrets.token_hex(6)}"
        target.mkdir(mode=0o700)
        self.sync.callback(target.rmdir)
        options = ("mode=700", f"size={_SECRETS_TMPFS_SIZE}")
        mount(Mount("tmpfs", "tmpfs", options), target)
        self.sync.callback(unmount, target)
        return target

    async def _secret(self, m: pb.Mount) -> None:
        opt = m.secret_opt
        data = await self._fetch_secret(opt.id)
        if data is None:
            if opt.optional:
                return
            raise SolveError(f"secret {opt.id}: not found")  # buildkitd's wording

        def write() -> str:
            if self.secret_dir is None:
                self.secret_dir = self._new_secret_dir()
            path = self.secret_dir / secrets.token_hex(8)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
                os.fchown(fd, opt.uid, opt.gid)
                os.fchmod(fd, opt.mode & 0o7777)
            finally:
                os.close(fd)
            return os.fspath(path)

        source = await _in_thread(write)
        self.out.mounts.append(MountSpec(m.dest, source, readonly=True))

    async def _ssh(self, m: pb.Mount) -> None:
        from bkcore.session.sshforward import forward_agent

        opt = m.ssh_opt
        socket_path: str | None = None
        last: SessionError | None = None
        for sid in session_group(self.ctx):
            try:
                conn = await self.engine.sessions.get(sid)
                socket_path = await self.stack.enter_async_context(
                    forward_agent(conn.caller, opt.id)
                )
                break
            except SessionError as exc:
                last = exc
        if socket_path is None:
            if opt.optional:
                return
            detail = f": {last}" if last is not None else ""
            raise SolveError(f"no SSH agent {opt.id or 'default'} forwarded{detail}")
        path = socket_path

        def own() -> None:
            os.chown(path, opt.uid, opt.gid)
            os.chmod(path, (opt.mode & 0o7777) or 0o600)

        await _in_thread(own)
        self.out.mounts.append(MountSpec(m.dest, path))


def _is_cache(m: pb.Mount) -> bool:
    return m.mount_type == pb.MountType.CACHE


def _subpath(root: Path | str, selector: str, dest: str) -> str:
    """The host path of ``selector`` inside ``root`` (never outside it); must exist."""
    from bkcore.fs.securepath import resolve

    if not selector or selector.strip("/") in ("", "."):
        return os.fspath(root)
    try:
        host = resolve(os.fspath(root), selector, follow_final=True)
    except Exception as exc:
        raise SolveError(f"mount {dest}: cannot resolve source {selector}: {exc}") from exc
    if not os.path.lexists(host):
        raise SolveError(f"mount {dest}: source {selector} not found in its input")
    return host


def recover_secret_dirs(root: str | os.PathLike[str]) -> list[str]:
    """Unmount and remove secret tmpfs dirs left by dead processes; returns their names."""
    from bkcore.cache.mount import unmount

    base = Path(root) / SECRETS_DIR
    if not base.is_dir():
        return []
    removed = []
    for entry in os.scandir(base):
        parts = entry.name.split("-")
        if len(parts) == 3 and parts[0].isdigit() and procs.alive(int(parts[0]), parts[1]):
            continue
        unmount(Path(entry.path))
        fsutil.remove(entry.path)
        removed.append(entry.name)
    return removed


def _recover_once(root: Path | str) -> None:
    key = os.fspath(root)
    if key not in _recovered:
        recover_secret_dirs(key)
        _recovered.add(key)
