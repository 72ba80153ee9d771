"""The exec op adapter: cache map (spec/solver.md §2.1) and running the process with runc.

:class:`ExecOpAdapter` turns one LLB ``ExecOp`` into a solver :class:`~bkcore.solver.types.Op`:

* ``cache_map``: sha256 of the Go JSON of a keyed copy of the op (selectors, extra-host IPs
  and proxy env cleared; a lone plain root mount dropped) plus the platform; per input a
  selector digest from the mount selectors and, unless the input feeds the rootfs or a
  writable output mount, a content key over the selected paths (``bkcore.fs.contenthash``).
* ``exec``: mounts prepared by :mod:`bkcore.ops.execmounts`, the process run by the engine's
  worker with its output streamed as progress logs, then the output mounts committed in
  mount order. A non-zero exit raises :class:`~bkcore.errors.ExecError` with the exit code,
  argv and the last output lines; a failure or cancellation commits nothing.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bkcore.errors import BkError, ExecError, SolveError
from bkcore.llb import pb
from bkcore.llb.digest import marshal
from bkcore.llb.gojson import is_present
from bkcore.llb.platforms import Platform
from bkcore.ops.cachejson import digest_of, exec_document
from bkcore.ops.decode import parse_message
from bkcore.solver.types import CacheMap, ComputeDigest, Dep, OpContext, Result
from bkcore.worker import NetworkMode, ProcessSpec, Ulimit

if TYPE_CHECKING:
    from bkcore.cache.store import CacheStore
    from bkcore.engine import Engine

__all__ = [
    "ExecOpAdapter",
    "content_keyed",
    "dedupe_paths",
    "exec_cache_digest",
    "input_selectors",
    "keyed_exec_op",
    "selector_digest",
]

ENTITLEMENT_NETWORK_HOST = "network.host"
ENTITLEMENT_INSECURE = "security.insecure"
_TAIL_BYTES = 8192
_TAIL_LINES = 10
_NETWORK: dict[int, NetworkMode] = {
    pb.NetMode.UNSET: "sandbox",
    pb.NetMode.HOST: "host",
    pb.NetMode.NONE: "none",
}


# -- cache map ------------------------------------------------------------------------------


def keyed_exec_op(exec_op: pb.ExecOp) -> pb.ExecOp:
    """The copy of ``exec_op`` whose JSON is keyed (solver.md §2.1); ``exec_op`` is untouched."""
    # A re-decode, not deepcopy: it keeps which empty sub-messages are present (Go non-nil).
    op = parse_message(pb.ExecOp, marshal(exec_op))
    for host in op.meta.extra_hosts:
        host.ip = ""
    for mount in op.mounts:
        if mount.selector:
            mount.selector = ""
    if is_present(op.meta.proxy_env):
        op.meta.proxy_env = pb.ProxyEnv()
    if len(op.mounts) == 1:
        m = op.mounts[0]
        plain = (
            m.dest == "/"
            and not m.readonly
            and m.mount_type == pb.MountType.BIND
            and not is_present(m.cache_opt)
            and not is_present(m.secret_opt)
            and not is_present(m.ssh_opt)
            and not m.result_id
        )
        if plain:
            op.mounts = []
    return op


def exec_cache_digest(exec_op: pb.ExecOp, platform: Platform) -> str:
    """The cache-map digest of ``exec_op`` on ``platform``."""
    doc = exec_document(
        keyed_exec_op(exec_op), platform.os, platform.architecture, platform.variant
    )
    return digest_of(doc)


def input_selectors(exec_op: pb.ExecOp, num_inputs: int) -> list[list[str]]:
    """Per input, the cleaned ``/``-rooted selector paths of its mounts, in mount order."""
    out: list[list[str]] = [[] for _ in range(num_inputs)]
    for m in exec_op.mounts:
        if 0 <= m.input < num_inputs and m.selector:
            out[m.input].append(posixpath.normpath(posixpath.join("/", m.selector)))
    return out


def selector_digest(paths: Sequence[str]) -> str:
    """sha256 of the paths joined by 0 bytes, or ``""`` without paths."""
    if not paths:
        return ""
    return digest_of(b"\0".join(p.encode() for p in paths))


def content_keyed(exec_op: pb.ExecOp, index: int) -> bool:
    """False when input ``index`` feeds the rootfs or a writable mount with an output."""
    for m in exec_op.mounts:
        if m.input != index:
            continue
        if m.output != -1 and (not m.readonly or m.dest == "/"):
            return False
    return True


def dedupe_paths(paths: Sequence[str]) -> list[str]:
    """Sorted unique paths without those nested under another kept path."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            continue
        kept.append(path)
    return kept


def _checksum_selection(root: str, paths: Sequence[str], *, empty_root_header: bool = False) -> str:
    from bkcore.fs.contenthash import ContentHasher, combine_selectors

    hasher = ContentHasher(root, empty_root_header=empty_root_header)
    return combine_selectors(
        [hasher.checksum(p, follow_links=True) for p in dedupe_paths(paths) or ["/"]]
    )


def _checksum_snapshot(store: CacheStore, snapshot_id: str, root: str, paths: Sequence[str]) -> str:
    """Blocking: the content key of ``paths`` in the committed snapshot viewed at ``root``
    (a local source's root metadata never counts, as for file ops)."""
    from bkcore.cache.results import uses_empty_root_header

    empty_root = uses_empty_root_header(store, snapshot_id)
    return _checksum_selection(root, paths, empty_root_header=empty_root)


# -- the adapter ----------------------------------------------------------------------------


def _platform_of(op: pb.Op, platform: object, default: str) -> Platform:
    if isinstance(platform, Platform):
        return platform
    if isinstance(platform, pb.Platform) and platform.os:
        return Platform(platform.os, platform.architecture, platform.variant)
    if isinstance(platform, str) and platform:
        return Platform.parse(platform)
    if op.platform.os:
        return Platform(op.platform.os, op.platform.architecture, op.platform.variant)
    return Platform.parse(default)


class ExecOpAdapter:
    """One LLB exec op as a solver op (see the module docstring)."""

    def __init__(self, op: pb.Op, digest: str, engine: Engine, platform: object = None) -> None:
        self.op = op
        self.exec_op = op.exec
        self.digest = digest
        self.engine = engine
        self.platform = _platform_of(op, platform, engine.platform)
        self._num_inputs = len(op.inputs)
        self._num_outputs = max((m.output + 1 for m in self.exec_op.mounts), default=0)

    @property
    def num_outputs(self) -> int:
        return self._num_outputs

    @property
    def worker(self) -> str:
        return "runc"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        paths = input_selectors(self.exec_op, self._num_inputs)
        deps = []
        for i in range(self._num_inputs):
            compute = self._content_key(paths[i]) if content_keyed(self.exec_op, i) else None
            deps.append(Dep(selector=selector_digest(paths[i]), compute_digest=compute))
        digest = exec_cache_digest(self.exec_op, self.platform)
        return CacheMap(digest=digest, deps=tuple(deps)), True

    def _content_key(self, paths: list[str]) -> ComputeDigest:
        async def compute(result: Result) -> str | None:
            from bkcore.cache.results import view

            try:
                store = self.engine.store
                async with view(result) as root:
                    return await asyncio.to_thread(
                        _checksum_snapshot, store, result.id, os.fspath(root), paths
                    )
            except SolveError:
                raise
            except (BkError, OSError) as exc:
                raise SolveError(
                    f"failed to compute cache key: {exc}", self.digest, self._description()
                ) from exc

        return compute

    def _description(self, ctx: OpContext | None = None) -> str:
        if ctx is not None and ctx.vertex.name:
            return ctx.vertex.name
        return " ".join(self.exec_op.meta.args)

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        from bkcore.ops.execmounts import prepare_mounts

        meta = self.exec_op.meta
        if not meta.args:
            raise SolveError("exec op has no arguments", self.digest, self._description(ctx))
        self._check_entitlements(ctx)
        snapshots = [r.id for r in inputs]  # a snapshot result's id is its snapshot id
        tail = _Tail()

        def on_output(fd: int, data: bytes) -> None:
            ctx.progress.log(fd, data)
            tail.add(data)

        try:
            async with prepare_mounts(self.engine, ctx, self.exec_op, snapshots) as prepared:
                process = ProcessSpec(
                    args=list(meta.args),
                    env=[*meta.env, *prepared.env],
                    cwd=meta.cwd or "/",
                    user=meta.user,
                    hostname=meta.hostname,
                    network=_NETWORK.get(int(self.exec_op.network), "sandbox"),
                    insecure=self.exec_op.security == pb.SecurityMode.INSECURE,
                    extra_hosts=[(h.host, h.ip) for h in meta.extra_hosts],
                    ulimits=[Ulimit(u.name, u.soft, u.hard) for u in meta.ulimit],
                    cgroup_parent=meta.cgroup_parent,
                    readonly_rootfs=any(m.dest == "/" and m.readonly for m in self.exec_op.mounts),
                )
                code = await self.engine.worker.run(
                    prepared.rootfs, prepared.mounts, process, on_output=on_output
                )
                if code != 0:
                    raise ExecError(
                        list(meta.args), code, tail.lines(), self.digest, self._description(ctx)
                    )
                outputs = await prepared.commit()
        except ExecError:
            raise
        except SolveError as exc:
            if exc.digest is None:
                raise SolveError(exc.message, self.digest, self._description(ctx)) from exc
            raise
        except BkError as exc:
            raise SolveError(str(exc), self.digest, self._description(ctx)) from exc
        except OSError as exc:
            raise SolveError(
                f"cannot set up the container: {exc}", self.digest, self._description(ctx)
            ) from exc
        missing = [i for i in range(self._num_outputs) if i not in outputs]
        if missing:
            for result in outputs.values():
                await result.release()
            raise SolveError(
                f"exec op has no writable mount for output {missing[0]}",
                self.digest,
                self._description(ctx),
            )
        return [outputs[i] for i in range(self._num_outputs)]

    @property
    def required_entitlements(self) -> list[str]:
        """Entitlements a job must grant before this exec may run or be loaded from cache."""
        needed = []
        if self.exec_op.network == pb.NetMode.HOST:
            needed.append(ENTITLEMENT_NETWORK_HOST)
        if self.exec_op.security == pb.SecurityMode.INSECURE:
            needed.append(ENTITLEMENT_INSECURE)
        return needed

    def _check_entitlements(self, ctx: OpContext) -> None:
        needed = self.required_entitlements
        if not needed:
            return
        granted: set[str] = set()
        for job in ctx.jobs():
            value = job.values.get("entitlements", ())
            if isinstance(value, list | tuple | set | frozenset):
                granted.update(str(v) for v in value)
        for name in needed:
            if name not in granted:
                raise SolveError(
                    f"{name} is not allowed (grant the {name} entitlement to use it)",
                    self.digest,
                    self._description(ctx),
                )


class _Tail:
    """The last bytes of a process's output, for the error message."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def add(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > 2 * _TAIL_BYTES:
            del self._buf[:-_TAIL_BYTES]

    def lines(self) -> list[str]:
        text = bytes(self._buf[-_TAIL_BYTES:]).decode("utf-8", errors="replace")
        return text.splitlines()[-_TAIL_LINES:]
