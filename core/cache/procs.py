"""Process identity (pid + kernel start time) so rows left by dead processes can be expired."""

from __future__ import annotations

import os


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot, or None when it is not running."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[19].decode()


def me() -> tuple[int, str]:
    """This process's (pid, start time)."""
    pid = os.getpid()
    started = start_time(pid)
    if started is None:  # pragma: no cover - /proc is always mounted on Linux
        raise RuntimeError("cannot read /proc/self/stat")
    return pid, started


def alive(pid: int, started: str) -> bool:
    """True when the process that wrote (pid, started) is still running."""
    return start_time(pid) == started
