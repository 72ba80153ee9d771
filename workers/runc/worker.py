"""``RuncWorker``: the runc executor behind the core's :class:`bkcore.worker.Worker` protocol."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bkcore.worker import MountSpec, OutputCallback, ProcessSpec, WorkerInfo

from .info import check, format_platform, host_platforms, load_worker_id, worker_info

if TYPE_CHECKING:
    from .executor import RuncExecutor

__all__ = ["STATE_SUBDIR", "RuncWorker"]

#: Where a worker keeps its state (runc root, bundles, worker id) below a bkcore state root.
STATE_SUBDIR = "runc"
#: runc's state root (``runc --root``) and the bundles folder inside a worker's state directory
#: (:class:`~bkcore.workers.runc.executor.RuncExecutor` uses the same names).
RUNC_STATE = "runc"
BUNDLES = "bundles"


def _has_entries(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is not None
    except FileNotFoundError:
        return False


class RuncWorker:
    """Runs each process in its own runc container; one instance per state directory.

    ``state_dir`` holds runc's state root, the per-run bundles and the persistent worker id
    (:meth:`for_root` puts it in ``<root>/runc``). ``snapshotter`` is only reported as a label.

    Start-up stays cheap: the executor module (OCI spec, mount stubs, users) is imported when a
    process first runs, and :meth:`recover` runs ``runc list`` only when runc's state root or
    the bundles folder holds something a crashed process could have left.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        runc: str = "runc",
        snapshotter: str = "overlayfs",
    ) -> None:
        self._state_dir = os.path.abspath(os.fspath(state_dir))
        self._runc = runc
        self._snapshotter = snapshotter
        self._executor: RuncExecutor | None = None

    @property
    def executor(self) -> RuncExecutor:
        """The :class:`RuncExecutor` of this state directory, made on first use."""
        if self._executor is None:
            from .executor import RuncExecutor

            self._executor = RuncExecutor(
                self._state_dir, runc=self._runc, snapshotter=self._snapshotter
            )
        return self._executor

    @classmethod
    def for_root(
        cls, root: str | os.PathLike[str], *, runc: str = "runc", snapshotter: str = "overlayfs"
    ) -> RuncWorker:
        """The worker whose state lives in ``<root>/runc`` (``root`` = the bkcore state root)."""
        return cls(Path(root) / STATE_SUBDIR, runc=runc, snapshotter=snapshotter)

    @property
    def name(self) -> str:
        return "runc"

    @property
    def state_dir(self) -> str:
        return self._state_dir

    def info(self) -> WorkerInfo:
        """Identity (persisted in ``state_dir/workerid``), host platforms and labels."""
        return WorkerInfo(
            id=load_worker_id(self._state_dir),
            platforms=tuple(format_platform(p) for p in host_platforms()),
            labels=worker_info(snapshotter=self._snapshotter)["labels"],
        )

    async def check(self) -> None:
        """Raise :class:`~bkcore.errors.PluginError` unless runc can run here (binary, root)."""
        await check(self._runc)

    async def recover(self) -> list[str]:
        """Kill and remove containers and bundles a crashed process left; return their ids.

        runc keeps one folder per container in its state root (``runc list`` reads them) and
        every run has a bundle folder: when both are empty or absent nothing is left to
        recover, and neither the executor nor a ``runc list`` process is needed."""
        if self._executor is None and not any(
            _has_entries(os.path.join(self._state_dir, sub)) for sub in (RUNC_STATE, BUNDLES)
        ):
            return []
        return await self.executor.recover()

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

        Setup failures raise :class:`~bkcore.errors.SolveError`; cancellation kills and reaps
        the container, removes its files and re-raises ``CancelledError``.
        """
        return await self.executor.run(rootfs, mounts, process, on_output=on_output, stdin=stdin)
