"""mount(2)/umount2(2) through libc, the overlay option string, and mount-table helpers."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from bkcore.errors import CacheError

MS_RDONLY = 1
MS_BIND = 4096
MNT_DETACH = 2
# The kernel copies at most one page of mount options.
MAX_OPTIONS = os.sysconf("SC_PAGESIZE") - 1

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


@dataclass(frozen=True, slots=True)
class Mount:
    """What a runtime needs to mount a snapshot (the containerd/OCI ``mounts`` shape)."""

    type: str
    source: str
    options: tuple[str, ...] = field(default_factory=tuple)


def overlay_options(
    lowers: list[str], upper: str | None = None, work: str | None = None
) -> tuple[str, ...]:
    """Overlay options; ``lowers`` are bottom first (the kernel wants top first)."""
    opts = ["lowerdir=" + ":".join(reversed(lowers))]
    if upper is not None and work is not None:
        opts += [f"upperdir={upper}", f"workdir={work}"]
    return tuple(opts)


def mount(m: Mount, target: Path, readonly: bool = False) -> None:
    """Mount ``m`` on ``target``; raises CacheError with the errno text on failure."""
    flags = MS_RDONLY if readonly else 0
    if m.type == "bind":
        flags |= MS_BIND
    data = ",".join(o for o in m.options if o not in ("ro", "rbind", "bind"))
    if len(data) > MAX_OPTIONS:
        raise CacheError(f"mount options for {target} are {len(data)} bytes, over the page")
    rc = _lib().mount(
        m.source.encode(), str(target).encode(), m.type.encode(), flags, data.encode() or None
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise CacheError(f"cannot mount {m.type} on {target}: {os.strerror(err)}")
    if m.type == "bind" and readonly:
        # A bind mount ignores MS_RDONLY on creation: remount it read-only.
        rc = _lib().mount(None, str(target).encode(), None, MS_BIND | 0x20 | MS_RDONLY, None)
        if rc != 0:
            err = ctypes.get_errno()
            unmount(target)
            raise CacheError(f"cannot make {target} read-only: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Unmount ``target``; falls back to a lazy detach when it is busy; absent is fine."""
    lib = _lib()
    if lib.umount2(str(target).encode(), 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return  # not a mount point (any more)
    if err == errno.EBUSY and lib.umount2(str(target).encode(), MNT_DETACH) == 0:
        return
    raise CacheError(f"cannot unmount {target}: {os.strerror(err)}")


def mount_points_under(root: Path) -> list[Path]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    prefix = str(root).rstrip("/")
    found: list[Path] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split(" ", 5)[4]
            point = point.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    found.sort(key=lambda p: len(p.parts), reverse=True)
    return found


def unmount_all_under(root: Path) -> None:
    """Unmount everything mounted at or below ``root``."""
    for point in mount_points_under(root):
        unmount(point)


def overlay_works(scratch: Path) -> bool:
    """Try a real overlay mount in ``scratch`` (on the state file system)."""
    if os.geteuid() != 0:
        return False
    dirs = {n: scratch / n for n in ("l1", "l2", "u", "w", "m")}
    try:
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        (dirs["l1"] / "f").write_bytes(b"x")
        m = Mount(
            "overlay",
            "overlay",
            overlay_options([str(dirs["l2"]), str(dirs["l1"])], str(dirs["u"]), str(dirs["w"])),
        )
        try:
            mount(m, dirs["m"])
        except CacheError:
            return False
        try:
            (dirs["m"] / "f").unlink()  # a whiteout must be creatable in the upper dir
            return (dirs["u"] / "f").exists() or os.path.lexists(dirs["u"] / "f")
        finally:
            unmount(dirs["m"])
    except OSError:
        return False
    finally:
        from bkcore.cache.fsutil import remove

        remove(scratch)
