"""Run one process in a container with runc: bundle, stream output, exit code, cleanup.

Sandbox choices (BuildKit v0.11 runc worker unless said otherwise):

* namespaces pid, ipc, uts, mount, and network unless ``network="host"``. There is no CNI
  here: ``sandbox`` and ``none`` both get a fresh network namespace holding only ``lo``
  (runc brings it up), so a sandboxed build has no outside network. Docker's default
  capabilities, containerd's masked/read-only ``/proc`` paths, ``RLIMIT_NOFILE`` 1024.
* seccomp: a denylist of the syscalls Docker's default profile refuses (module ``ocispec``),
  weaker than Docker's allowlist profile. ``insecure`` drops it, grants every capability we
  hold, allows all devices and mounts ``/sys`` read-write.
* ``/etc/hosts`` and ``/etc/resolv.conf`` are generated in the bundle and bind-mounted
  read-only; every mount point runc has to create in the rootfs is removed after the run.
* runc's own errors (bad mount, missing executable) are read from its JSON log and raised as
  ``SolveError``; the process's exit code is returned otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from bkcore.errors import SolveError
from bkcore.worker import WorkerInfo

from .info import format_platform, host_platforms, load_worker_id, worker_info
from .netfiles import hosts_file, resolv_conf
from .ocispec import bounding_capabilities, build_config, clean_dest, user_mount
from .rootpath import mkdir_all_in_root
from .stubs import MountStubs
from .types import DEFAULT_HOSTNAME, MountSpec, OutputCallback, ProcessSpec
from .users import resolve_user

T = TypeVar("T")

_CHUNK = 64 * 1024
_KILL_ATTEMPTS = 50
#: How long output may still arrive once runc has exited (normally it is all there at once).
_DRAIN_SECONDS = 10.0
_STUBS_FILE = "stubs.json"


async def _shielded(awaitable: Awaitable[T]) -> tuple[T, bool]:
    """Await ``awaitable`` to the end even if we are cancelled meanwhile.

    Returns the result and whether a cancellation arrived (the caller must re-raise it). Used
    for spawning runc and for cleanup (killing and reaping a container, removing its files):
    the work runs shielded in its own task, which is always awaited before this returns.
    """
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True


async def _uncancellable(awaitable: Awaitable[T]) -> T:
    """Like ``_shielded`` but re-raises a cancellation that arrived meanwhile."""
    result, cancelled = await _shielded(awaitable)
    if cancelled:
        raise asyncio.CancelledError
    return result


class RuncExecutor:
    """Runs processes in containers with ``runc``; one OCI bundle per run under ``state_dir``.

    ``state_dir/runc`` is runc's own state root (``runc --root``), ``state_dir/bundles/<id>``
    holds each run's ``config.json``, generated ``hosts``/``resolv.conf`` and runc log.
    """

    def __init__(self, state_dir: str, runc: str = "runc", snapshotter: str = "overlayfs") -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.snapshotter = snapshotter
        self.runc = runc
        self.runc_root = os.path.join(self.state_dir, "runc")  # worker.RUNC_STATE
        self.bundles_dir = os.path.join(self.state_dir, "bundles")  # worker.BUNDLES
        self._active: set[str] = set()

    @property
    def name(self) -> str:
        """Registry name of this worker."""
        return "runc"

    def info(self) -> WorkerInfo:
        """Identity (persisted in ``state_dir/workerid``), host platforms and labels."""
        details = worker_info(snapshotter=self.snapshotter)
        return WorkerInfo(
            id=load_worker_id(self.state_dir),
            platforms=tuple(format_platform(p) for p in host_platforms()),
            labels=details["labels"],
        )

    def runc_command(self, *args: str) -> list[str]:
        """A runc command line using this executor's state root."""
        return [self.runc, "--root", self.runc_root, *args]

    async def run(
        self,
        rootfs: str,
        mounts: Sequence[MountSpec],
        process: ProcessSpec,
        *,
        on_output: OutputCallback | None = None,
        stdin: bytes | None = None,
    ) -> int:
        """Run ``process`` on ``rootfs`` with ``mounts``; return its exit code.

        Output chunks are passed to ``on_output(fd, data)`` (fd 1 or 2) as they arrive.
        Raises ``SolveError`` when the container cannot be set up or started (unknown user,
        missing executable, bad mount). On cancellation the container is killed and deleted,
        its files removed, and ``CancelledError`` re-raised.
        """
        if not process.args:
            raise SolveError("cannot run a process without arguments")
        rootfs = os.path.abspath(rootfs)
        container_id = "bk" + secrets.token_hex(12)
        bundle = os.path.join(self.bundles_dir, container_id)
        stubs = MountStubs()
        self._active.add(container_id)
        try:
            await _uncancellable(
                asyncio.to_thread(
                    self._prepare, container_id, bundle, rootfs, mounts, process, stubs
                )
            )
            return await self._execute(container_id, bundle, on_output, stdin)
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            try:
                await _uncancellable(asyncio.to_thread(_remove_files, bundle, stubs))
            finally:
                self._active.discard(container_id)

    async def recover(self) -> list[str]:
        """Clean up after a crashed process that used this ``state_dir``; return the ids.

        Kills and deletes every container in runc's state root and every bundle left
        behind (removing its mount stubs from the rootfs), except runs of this executor that
        are still active. Meant to be called once at start-up.
        """
        listed = await asyncio.create_subprocess_exec(
            *self.runc_command("list", "-q"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await listed.communicate()
        ids = set(out.decode().split()) if listed.returncode == 0 else set()
        if os.path.isdir(self.bundles_dir):
            ids.update(os.listdir(self.bundles_dir))
        stale = sorted(ids - self._active)
        for container_id in stale:
            await _uncancellable(self._recover_one(container_id))
        return stale

    async def _recover_one(self, container_id: str) -> None:
        await self._runc_quiet("kill", container_id, "KILL")
        await self._runc_quiet("delete", "--force", container_id)
        bundle = os.path.join(self.bundles_dir, container_id)
        await asyncio.to_thread(_remove_files, bundle, _load_stubs(bundle))

    def _prepare(
        self,
        container_id: str,
        bundle: str,
        rootfs: str,
        mounts: Sequence[MountSpec],
        process: ProcessSpec,
        stubs: MountStubs,
    ) -> None:
        if not os.path.isdir(rootfs):
            raise SolveError(f"rootfs {rootfs} is not a directory")
        os.makedirs(self.runc_root, exist_ok=True)
        os.makedirs(bundle, mode=0o711)
        cwd = clean_dest(process.cwd or "/", "/")
        user = resolve_user(rootfs, process.user)
        hostname = process.hostname or DEFAULT_HOSTNAME

        extra: list[dict[str, Any]] = []
        hosts_path = os.path.join(bundle, "hosts")
        resolv_path = os.path.join(bundle, "resolv.conf")
        try:
            hosts_data = hosts_file(hostname, process.extra_hosts)
        except ValueError as exc:
            raise SolveError(f"invalid extra host: {exc}") from exc
        _write(hosts_path, hosts_data)
        _write(resolv_path, resolv_conf(_read_host_resolv(), process.network == "host"))
        extra.append(_ro_bind(hosts_path, "/etc/hosts"))
        extra.append(_ro_bind(resolv_path, "/etc/resolv.conf"))
        for spec in mounts:
            dest = clean_dest(spec.dest, cwd)
            if dest == "/":
                raise SolveError("a mount on / must be given as the rootfs")
            extra.append(user_mount(spec, dest))

        try:
            config = build_config(
                container_id=container_id,
                rootfs=rootfs,
                process=process,
                user=user,
                hostname=hostname,
                mounts=extra,
                privileged_caps=bounding_capabilities() if process.insecure else (),
            )
        except ValueError as exc:
            raise SolveError(str(exc)) from exc
        # Only this run's own mounts (user mounts, /etc/hosts, /etc/resolv.conf) are stubs to
        # remove afterwards; the runtime's mount points (/dev, /proc, /sys) stay in the rootfs,
        # as BuildKit's do (its first RUN layer holds them: spec/exporters.md §3).
        stubs.record(rootfs, [m["destination"] for m in extra])
        _write(os.path.join(bundle, _STUBS_FILE), stubs.dumps())
        try:
            mkdir_all_in_root(rootfs, cwd)
        except OSError as exc:
            raise SolveError(f"cannot create working directory {cwd}: {exc.strerror}") from exc
        _write(os.path.join(bundle, "config.json"), json.dumps(config, indent=1).encode())

    async def _execute(
        self,
        container_id: str,
        bundle: str,
        on_output: OutputCallback | None,
        stdin: bytes | None,
    ) -> int:
        log_path = os.path.join(bundle, "runc-log.json")
        # Output pipes are ours, not asyncio's: with PIPE, Python 3.11's ``proc.wait()``
        # returns only once every pipe is closed too, so any process still holding one (a
        # container process that outlived runc) made the uncancellable cleanup wait forever.
        # Now ``proc.wait()`` is runc's exit alone; the readers are closed by us.
        pipes = [os.pipe(), os.pipe()]
        try:
            # Spawned shielded: a cancellation during the spawn must not lose the handle.
            proc, cancelled = await _shielded(
                asyncio.create_subprocess_exec(
                    *self.runc_command(
                        "--log",
                        log_path,
                        "--log-format",
                        "json",
                        "run",
                        "--bundle",
                        bundle,
                        container_id,
                    ),
                    stdin=asyncio.subprocess.PIPE
                    if stdin is not None
                    else asyncio.subprocess.DEVNULL,
                    stdout=pipes[0][1],
                    stderr=pipes[1][1],
                    start_new_session=True,
                )
            )
        except BaseException:
            for read_end, _ in pipes:
                os.close(read_end)
            raise
        finally:
            for _, write_end in pipes:
                os.close(write_end)
        readers: list[asyncio.ReadTransport] = []
        unowned = [read_end for read_end, _ in pipes]  # read ends no transport owns yet
        try:
            if cancelled:
                raise asyncio.CancelledError
            streams = [await _reader(unowned, readers) for _ in pipes]
            async with asyncio.TaskGroup() as tg:
                pumps = [
                    tg.create_task(_pump(s, fd, on_output))
                    for fd, s in ((1, streams[0]), (2, streams[1]))
                ]
                if stdin is not None:
                    assert proc.stdin is not None
                    tg.create_task(_feed(proc.stdin, stdin))
                code = await proc.wait()
                # runc is gone, and with it the container's processes: what they wrote is
                # in the pipes. Drain it; a pipe some stray process still holds open is
                # closed after a grace period instead of being waited for.
                _, pending = await asyncio.wait(pumps, timeout=_DRAIN_SECONDS)
                if pending:
                    for transport in readers:
                        transport.close()  # feeds EOF to its reader
        except BaseException:
            try:
                await _uncancellable(self._abort(container_id, proc))
            finally:
                for transport in readers:
                    transport.close()
            raise
        finally:
            for read_end in unowned:
                os.close(read_end)  # never handed to a transport (cancelled before)
        for transport in readers:
            transport.close()
        if code != 0:
            failure = await asyncio.to_thread(_runc_failure, log_path)
            if failure:
                raise SolveError(failure)
        return code

    async def _runc_quiet(self, *args: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            *self.runc_command(*args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await proc.wait()

    async def _abort(self, container_id: str, proc: asyncio.subprocess.Process) -> None:
        """Kill the container (retrying until runc has created it), reap runc, delete state."""
        for _ in range(_KILL_ATTEMPTS):
            if proc.returncode is not None:
                break
            await self._runc_quiet("kill", container_id, "KILL")
            try:
                await asyncio.wait_for(proc.wait(), 0.2)
            except TimeoutError:
                continue
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await self._runc_quiet("delete", "--force", container_id)


async def _reader(
    unowned: list[int], transports: list[asyncio.ReadTransport]
) -> asyncio.StreamReader:
    """A StreamReader over the first fd of ``unowned``, which it takes (closing it if it
    fails); the new transport owns the fd and is added to ``transports`` for the caller."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
    pipe = os.fdopen(unowned.pop(0), "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
        )
    except BaseException:
        pipe.close()
        raise
    transports.append(transport)
    return reader


async def _pump(stream: asyncio.StreamReader, fd: int, on_output: OutputCallback | None) -> None:
    while chunk := await stream.read(_CHUNK):
        if on_output is not None:
            on_output(fd, chunk)


async def _feed(writer: asyncio.StreamWriter, data: bytes) -> None:
    try:
        writer.write(data)
        await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        writer.close()


def _ro_bind(source: str, dest: str) -> dict[str, Any]:
    return {"destination": dest, "type": "bind", "source": source, "options": ["rbind", "ro"]}


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def _read_host_resolv() -> bytes | None:
    try:
        with open("/etc/resolv.conf", "rb") as fh:
            return fh.read(1 << 20)
    except OSError:
        return None


def _runc_failure(log_path: str) -> str:
    """The last error runc itself logged (not the container process's), or ``""``."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return ""
    message = ""
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", ""))
    return message


def _load_stubs(bundle: str) -> MountStubs:
    try:
        with open(os.path.join(bundle, _STUBS_FILE), "rb") as fh:
            return MountStubs.loads(fh.read())
    except (OSError, ValueError, KeyError, TypeError):
        return MountStubs()


def _remove_files(bundle: str, stubs: MountStubs) -> None:
    stubs.remove()
    shutil.rmtree(bundle, ignore_errors=True)
