"""``bkcore build --allow`` end to end: runc steps with host network or privileges.

Each graph runs a busybox step on the local source ``base`` (``scripts/make-rootfs``, the
session fixture ``busybox_rootfs`` of this folder's conftest) and writes what it saw to an
output mount. A step asking for ``network=host`` or ``security=insecure`` fails the build with
one error line naming the missing entitlement, unless ``--allow`` grants it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Both probes append to /out/report (the output mount starts empty in every build).
NET_PROBE = "ls /sys/class/net >> /out/report"
MOUNT_PROBE = (
    "mkdir -p /mnt; "
    "if mount -t tmpfs none /mnt 2>/dev/null; then echo mounted; else echo refused; fi"
    " >> /out/report"
)
BOTH_PROBES = f"{NET_PROBE}; {MOUNT_PROBE}"


def _graph(
    script: str, network: llb.NetMode | None = None, security: llb.SecurityMode | None = None
) -> bytes:
    out = llb.bind("/out", llb.scratch())
    step = llb.local("base").sh(script, mounts=[out], network=network, security=security)
    data: bytes = step.get_mount("/out").marshal().to_bytes()
    return data


class Run:
    """A finished ``bkcore build``: exit status and its stderr as text."""

    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.returncode = proc.returncode
        self.stderr = proc.stderr.decode(errors="replace")


DAEMON_ALLOWS = (
    "--allow-insecure-entitlement",
    "network.host",
    "--allow-insecure-entitlement",
    "security.insecure",
)


def _build(bkcli: Any, tmp_path: Path, rootfs: Path, definition: bytes, *allow: str) -> Run:
    out = tmp_path / "out"
    # a daemon allows both (as buildkitd --allow-insecure-entitlement): the client's --allow
    # is what decides here, in both modes
    argv = [*bkcli(tmp_path / "state", daemon_args=DAEMON_ALLOWS), "build"]
    argv += ["--local", f"base={rootfs}", "--output", f"type=local,dest={out}"]
    argv += ["--progress", "plain"]
    for name in allow:
        argv += ["--allow", name]
    proc = subprocess.run(
        argv, input=definition, capture_output=True, timeout=180, cwd=REPO, check=False
    )
    return Run(proc)


def _report(tmp_path: Path) -> list[str]:
    return (tmp_path / "out" / "report").read_text().split()


def _assert_refused(proc: Run, entitlement: str, tmp: Path) -> None:
    assert proc.returncode == 1, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0] == proc.stderr.strip().splitlines()[-1]
    assert f"{entitlement} is not allowed" in errors[0]
    assert f"grant the {entitlement} entitlement" in errors[0]
    assert not (tmp / "out" / "report").exists()  # the step never ran


def test_sandboxed_step_sees_only_loopback_and_cannot_mount(
    bkcli: Any, tmp_path: Path, busybox_rootfs: Path
) -> None:
    # The baseline the probes below are measured against, with both entitlements granted:
    # a step that asks for neither mode stays sandboxed.
    proc = _build(
        bkcli, tmp_path, busybox_rootfs, _graph(BOTH_PROBES), "network.host", "security.insecure"
    )
    assert proc.returncode == 0, proc.stderr
    assert _report(tmp_path) == ["lo", "refused"]


def test_host_network_needs_allow_network_host(
    bkcli: Any, tmp_path: Path, busybox_rootfs: Path
) -> None:
    definition = _graph(NET_PROBE, network=llb.NetMode.HOST)
    _assert_refused(_build(bkcli, tmp_path, busybox_rootfs, definition), "network.host", tmp_path)
    other = _build(bkcli, tmp_path, busybox_rootfs, definition, "security.insecure")
    _assert_refused(other, "network.host", tmp_path)

    granted = _build(bkcli, tmp_path, busybox_rootfs, definition, "network.host")
    assert granted.returncode == 0, granted.stderr
    seen = _report(tmp_path)
    assert sorted(seen) == sorted(os.listdir("/sys/class/net"))
    assert len(seen) > 1 and "lo" in seen


def test_insecure_needs_allow_security_insecure(
    bkcli: Any, tmp_path: Path, busybox_rootfs: Path
) -> None:
    definition = _graph(MOUNT_PROBE, security=llb.SecurityMode.INSECURE)
    _assert_refused(
        _build(bkcli, tmp_path, busybox_rootfs, definition), "security.insecure", tmp_path
    )
    other = _build(bkcli, tmp_path, busybox_rootfs, definition, "network.host")
    _assert_refused(other, "security.insecure", tmp_path)

    granted = _build(bkcli, tmp_path, busybox_rootfs, definition, "security.insecure")
    assert granted.returncode == 0, granted.stderr
    assert _report(tmp_path) == ["mounted"]


def test_a_step_needing_both_gets_them_from_two_flags(
    bkcli: Any, tmp_path: Path, busybox_rootfs: Path
) -> None:
    definition = _graph(BOTH_PROBES, network=llb.NetMode.HOST, security=llb.SecurityMode.INSECURE)
    proc = _build(bkcli, tmp_path, busybox_rootfs, definition, "network.host", "security.insecure")
    assert proc.returncode == 0, proc.stderr
    seen = _report(tmp_path)
    assert seen[-1] == "mounted"
    assert sorted(seen[:-1]) == sorted(os.listdir("/sys/class/net"))


def test_a_cached_step_is_still_refused_without_the_entitlement(
    bkcli: Any, tmp_path: Path, busybox_rootfs: Path
) -> None:
    # The rootfs is a content-keyed copy of the local base, so the step is cached across
    # builds; the entitlement check must run before the cache is consulted.
    base = llb.scratch().file(llb.copy(llb.local("base"), "/", "/", dir_contents_only=True))
    out = llb.bind("/out", llb.scratch())
    step = base.sh(NET_PROBE, mounts=[out], network=llb.NetMode.HOST)
    definition = step.get_mount("/out").marshal().to_bytes()
    granted = _build(bkcli, tmp_path, busybox_rootfs, definition, "network.host")
    assert granted.returncode == 0, granted.stderr
    again = _build(bkcli, tmp_path, busybox_rootfs, definition, "network.host")
    assert again.returncode == 0 and "CACHED" in again.stderr, again.stderr
    shutil.rmtree(tmp_path / "out")
    _assert_refused(_build(bkcli, tmp_path, busybox_rootfs, definition), "network.host", tmp_path)
