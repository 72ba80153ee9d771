"""Mount stubs: the empty files and directories runc creates in a rootfs as mount points.

They are recorded before the run and removed afterwards, so a container's mounts never leak
into the rootfs snapshot. The modification times of the directories that held them are
restored too, so a diffing snapshotter sees no change either: to their time before the run
when the process left their entries as they were, else (the process added or removed
something there) to their time after the run, before the stubs went -- what BuildKit v0.11
keeps (its stub cleaner restores the time it finds just before removing a stub).

Runs may share a rootfs directory concurrently, and removing a directory that is a mount point
in another container's mount namespace silently detaches that mount there. So stubs are
tracked process-wide: a path used as (or above) a mount point by a live run is never removed,
and the last run using a stub removes it.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from .rootpath import resolve_in_root

_lock = threading.Lock()
_in_use: Counter[str] = Counter()  # host paths at or above a live run's mount point
_known_stubs: set[str] = set()  # stubs created for a live run


def _chain(rootfs: str, host: str) -> list[str]:
    """Host paths from just below ``rootfs`` down to ``host`` (outermost first)."""
    root = os.path.abspath(rootfs)
    rel = os.path.relpath(host, root)
    if rel == ".":
        return []
    out: list[str] = []
    current = root
    for part in rel.split(os.sep):
        current = os.path.join(current, part)
        out.append(current)
    return out


@dataclass
class MountStubs:
    """Paths that did not exist before the run, and the times of their existing parents."""

    paths: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)
    parent_times: dict[str, tuple[int, int]] = field(default_factory=dict)
    parent_names: dict[str, list[str]] = field(default_factory=dict)

    def record(self, rootfs: str, dests: Iterable[str]) -> None:
        """Remember which of the paths ``dests`` (inside ``rootfs``) runc will have to create."""
        with _lock:
            seen = set(self.paths)
            for dest in dests:
                chain = _chain(rootfs, resolve_in_root(rootfs, dest))
                self.used.extend(chain)
                _in_use.update(chain)
                missing = False
                for index, path in enumerate(chain):
                    if not missing and (path in _known_stubs or not os.path.lexists(path)):
                        missing = True
                        parent = os.path.dirname(path) if index == 0 else chain[index - 1]
                        if parent not in self.parent_times:
                            st = os.stat(parent)
                            self.parent_times[parent] = (st.st_atime_ns, st.st_mtime_ns)
                            self.parent_names[parent] = sorted(os.listdir(parent))
                    if missing and path not in seen:
                        seen.add(path)
                        self.paths.append(path)
                        _known_stubs.add(path)

    def dumps(self) -> bytes:
        """What a crash recovery needs to remove these stubs later (see ``loads``)."""
        doc = {"paths": self.paths, "parent_times": self.parent_times}
        return json.dumps(doc).encode()

    @classmethod
    def loads(cls, data: bytes) -> MountStubs:
        doc = json.loads(data)
        times = {str(k): (int(v[0]), int(v[1])) for k, v in doc["parent_times"].items()}
        return cls(paths=[str(p) for p in doc["paths"]], parent_times=times)

    def remove(self) -> None:
        """Remove stubs no live run uses and still empty (deepest first); restore times."""
        with _lock:
            _in_use.subtract(self.used)
            for path in self.used:
                if _in_use[path] <= 0:
                    del _in_use[path]
            self.used.clear()
            after_run: dict[str, tuple[int, int]] = {}
            for parent in self.parent_times:
                try:
                    st = os.stat(parent)
                except OSError:
                    continue
                after_run[parent] = (st.st_atime_ns, st.st_mtime_ns)
            for path in sorted(self.paths, key=lambda p: p.count(os.sep), reverse=True):
                if path in _in_use:
                    continue
                _known_stubs.discard(path)
                _remove_if_stub(path)
            for parent, times in self.parent_times.items():
                if parent in _in_use:
                    continue
                names = self.parent_names.get(parent)
                try:
                    if names is not None and parent in after_run:
                        if sorted(os.listdir(parent)) != names:
                            times = after_run[parent]  # the process changed the directory
                    os.utime(parent, ns=times, follow_symlinks=False)
                except (FileNotFoundError, NotADirectoryError):
                    continue
            self.paths.clear()


def _remove_if_stub(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    try:
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(path)
        elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
            os.unlink(path)
    except OSError:
        # Not empty (the process wrote there) or still busy: it is real content now.
        return
