"""``RuncWorker``: the runc executor behind the core's :class:`bkcore.worker.Worker` protocol."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bkcore.worker import MountSpec, OutputCallback, ProcessSpec, WorkerInfo

from .executor import RuncExecutor
from .info import check

__all__ = ["STATE_SUBDIR", "RuncWorker"]

#: Where a worker keeps its state (runc root, bundles, worker id) below a bkcore state root.
STATE_SUBDIR = "runc"


class RuncWorker:
    """Runs each process in its own runc container; one instance per state directory.

    ``state_dir`` holds runc's state root, the per-run bundles and the persistent worker id
    (:meth:`for_root` puts it in ``<root>/runc``). ``snapshotter`` is only reported as a label.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        runc: str = "runc",
        snapshotter: str = "overlayfs",
    ) -> None:
        self.executor = RuncExecutor(os.fspath(state_dir), runc=runc, snapshotter=snapshotter)

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
        return self.executor.state_dir

    def info(self) -> WorkerInfo:
        return self.executor.info()

    async def check(self) -> None:
        """Raise :class:`~bkcore.errors.PluginError` unless runc can run here (binary, root)."""
        await check(self.executor.runc)

    async def recover(self) -> list[str]:
        """Kill and remove containers and bundles a crashed process left; return their ids."""
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
