"""Interrupting ``bkcore build``: Ctrl-C (SIGINT) cancels cleanly, SIGKILL is recovered from.

A build is interrupted while its step is known to be running: the test reads the build's
rawjson progress until the step's own output line arrives (no sleeps, no timing).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb

pytestmark = pytest.mark.integration

#: The long step's argv; unique to this test process, so concurrent test runs never meet.
MARKER = f"sleep {47_000_000 + os.getpid()}"


def long_step(bk: Any, tag: str) -> Any:
    """A step that says it started, then sleeps (a long sleep with a recognisable argv)."""
    step = bk.base().sh(
        f"echo STEP-STARTED {tag}; echo partial > /partial.txt; exec {MARKER}",
        custom_name=f"long step {tag}",
    )
    return llb.scratch().file(llb.copy(step.root(), "/partial.txt", "/partial.txt"))


def wait_for_log(proc: subprocess.Popen[bytes], text: bytes) -> None:
    """Read rawjson progress lines from the build until a log chunk contains ``text``."""
    assert proc.stderr is not None
    said = []
    for line in iter(proc.stderr.readline, b""):
        if not line.startswith(b"{"):
            said.append(line.decode(errors="replace"))
            continue
        for log in json.loads(line).get("logs", []):
            if text in base64.b64decode(log.get("data", "")):
                return
    raise AssertionError(
        f"build ended ({proc.wait()}) before printing {text!r}: {''.join(said)[-2000:]}"
    )


def marker_pids() -> list[int]:
    """Processes of the long step: the shell before its exec, ``sleep`` after it (the
    token is in both command lines, so there is no race with the exec)."""
    token = MARKER.split()[1].encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if token in fh.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def containers(root: Path) -> list[str]:
    """Containers runc knows in this state root."""
    proc = subprocess.run(
        ["runc", "--root", str(root / "runc" / "runc"), "list", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.split()


def mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        return [line for line in fh if f" {root}/" in line or f" {root} " in line]


def assert_no_leftovers(root: Path, mode: str = "embedded") -> None:
    """Nothing of a cancelled build is left under ``root``. An embedded build cleans up before
    its process exits; a daemon cancels the build when its client goes, so in daemon mode this
    waits (bounded) for the daemon to finish that, and the daemon's own shared hold of the run
    lock is expected."""
    if mode == "daemon":
        deadline = time.monotonic() + 60
        while containers(root) or os.listdir(root / "runc" / "bundles") or mounts_under(root):
            assert time.monotonic() < deadline, (containers(root), mounts_under(root))
            time.sleep(0.05)
    assert containers(root) == []
    assert os.listdir(root / "runc" / "bundles") == []
    assert mounts_under(root) == []
    if mode == "daemon":
        return
    for lock in (root / "lock", root / "run" / "controller.lock"):
        if lock.exists():
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it
            finally:
                os.close(fd)


def test_ctrl_c_cancels_cleanly_and_exits_130(bk: Any, tmp_path: Path) -> None:
    before = marker_pids()
    proc = bk.start(long_step(bk, "sigint"), out=tmp_path / "out")
    wait_for_log(proc, b"STEP-STARTED sigint")
    assert len(marker_pids()) == len(before) + 1
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode(errors="replace")
    assert b"Traceback" not in err
    assert_no_leftovers(bk.root, bk.mode)
    assert marker_pids() == before
    assert not (tmp_path / "out").exists()

    # Nothing of the cancelled step was kept: the next build runs it again.
    again = bk.start(long_step(bk, "sigint"), out=tmp_path / "out")
    wait_for_log(again, b"STEP-STARTED sigint")
    os.killpg(again.pid, signal.SIGINT)
    again.communicate(timeout=120)
    assert again.returncode == 130
    assert_no_leftovers(bk.root, bk.mode)
    assert marker_pids() == before


# embedded only: SIGKILL of the engine process itself (the daemon case, a killed client, is
# test_d6load_clients' SIGKILLed client)
@pytest.mark.embedded_only("SIGKILLs the engine process and recovers its leftovers")
def test_sigkill_mid_build_then_a_new_build_recovers(bk: Any, tmp_path: Path) -> None:
    before = marker_pids()
    proc = bk.start(long_step(bk, "sigkill"), out=tmp_path / "out")
    wait_for_log(proc, b"STEP-STARTED sigkill")
    proc.kill()  # only the bkcore process: its runc container is left running
    proc.wait(timeout=60)
    assert len(containers(bk.root)) == 1
    assert len(marker_pids()) == len(before) + 1

    # A new build on the same root removes what the dead one left and builds normally.
    graph = bk.base().sh("echo fine > /ok.txt", custom_name="after crash").root()
    run = bk.build(llb.scratch().file(llb.copy(graph, "/ok.txt", "/ok.txt")), out=tmp_path / "o")
    assert (tmp_path / "o" / "ok.txt").read_text() == "fine\n"
    assert marker_pids() == before
    assert_no_leftovers(bk.root)
    assert run.cached()["after crash"] is False

    # The store is consistent: what the new build made is cached, du and prune work.
    assert bk.build(
        llb.scratch().file(llb.copy(graph, "/ok.txt", "/ok.txt")), out=tmp_path / "o2"
    ).cached()["after crash"]
    base = bk.cli()
    du = subprocess.run([*base, "du"], capture_output=True, text=True, check=False)
    assert du.returncode == 0, du.stderr
    prune = subprocess.run([*base, "prune"], capture_output=True, text=True, check=False)
    assert prune.returncode == 0, prune.stderr
    assert_no_leftovers(bk.root)
    # The interrupted step never produced a result: it runs (and is killed) again.
    again = bk.start(long_step(bk, "sigkill"), out=tmp_path / "out")
    wait_for_log(again, b"STEP-STARTED sigkill")
    os.killpg(again.pid, signal.SIGINT)
    again.communicate(timeout=120)
    assert again.returncode == 130
    assert_no_leftovers(bk.root)
