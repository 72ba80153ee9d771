"""Small metadata helpers shared by the file actions: owners, times, directory creation."""

from __future__ import annotations

import os
import stat
import time

from bkcore.fs.errors import FileOpError
from bkcore.fs.users import Owner


def timestamp_ns(timestamp: int | None) -> int | None:
    """LLB timestamp (Unix ns, ``-1`` = not set) to ns or None."""
    if timestamp is None or timestamp < 0:
        return None
    return timestamp


def now_ns() -> int:
    return time.time_ns()


def set_times(path: str, ns: int | None) -> None:
    """Set atime and mtime of *path* (not following a final symlink) when *ns* is given."""
    if ns is not None:
        os.utime(path, ns=(ns, ns), follow_symlinks=False)


def set_owner(path: str, owner: Owner | None) -> None:
    if owner is not None:
        os.chown(path, owner.uid, owner.gid, follow_symlinks=False)


def inroot(root: str, host_path: str) -> str:
    rel = os.path.relpath(host_path, root)
    return "/" if rel == "." else "/" + rel


def mkdir_all(
    root: str,
    components: list[str],
    mode: int,
    owner: Owner | None,
    ns: int | None,
    *,
    action: str = "mkdir",
) -> list[str]:
    """Create every missing directory of *components* (already resolved inside *root*).

    New directories get *mode* (umask does not apply), *owner* and *ns*, each right after it
    is made, as BuildKit v0.11's ``MkdirAll``: creating the next one bumps its parent's
    mtime, so only the deepest new directory keeps *ns* (until something is written into
    it). Existing ones are left untouched. A non-directory in the way is an error. Returns
    the created host paths.
    """
    path = root
    created: list[str] = []
    for comp in components:
        path = os.path.join(path, comp)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path, 0o700)
            except OSError as exc:
                raise FileOpError(f"{action} {inroot(root, path)}: {exc.strerror}") from exc
            set_owner(path, owner)
            os.chmod(path, mode)
            set_times(path, ns)
            created.append(path)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise FileOpError(f"{action} {inroot(root, path)}: not a directory")
    return created
