"""Integration tests of the runc executor: real runc, real containers (root needed)."""

from __future__ import annotations

import asyncio
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bkcore.errors import PluginError, SolveError
from bkcore.workers.runc import (
    DEFAULT_PATH,
    MountSpec,
    ProcessSpec,
    RuncExecutor,
    Ulimit,
    check,
)

BUSYBOX = "/bin/busybox"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc binary not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="runc containers need root"),
]

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
    "bob:x:1001:1001::/home/bob:/bin/sh\n"
)
GROUP = "root:x:0:\nalice:x:1000:\nbob:x:1001:\nwheel:x:10:alice\nstaff:x:50:alice,bob\n"


RUNTIME_MOUNT_POINTS = ("dev", "proc", "sys")


def make_rootfs(path: Path) -> Path:
    """A tiny rootfs: busybox with every applet linked into /bin, /etc/passwd, /etc/group."""
    (path / "bin").mkdir(parents=True)
    (path / "etc").mkdir()
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (path / "bin" / applet).symlink_to("busybox")
    (path / "etc" / "passwd").write_text(PASSWD)
    (path / "etc" / "group").write_text(GROUP)
    for point in RUNTIME_MOUNT_POINTS:  # as in images that ran once (see the test below)
        (path / point).mkdir()
    return path


def tree_state(root: Path) -> dict[str, tuple[int, int, int, int, int]]:
    """Every entry below root with its mode, owner, size and mtime (symlinks not followed)."""
    state: dict[str, tuple[int, int, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            state[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
    return state


class Output:
    def __init__(self) -> None:
        self.chunks: list[tuple[int, bytes]] = []

    def __call__(self, fd: int, data: bytes) -> None:
        self.chunks.append((fd, data))

    def text(self, fd: int) -> str:
        return b"".join(d for f, d in self.chunks if f == fd).decode()


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path / "rootfs")


@pytest.fixture
def executor(tmp_path: Path) -> RuncExecutor:
    return RuncExecutor(str(tmp_path / "state"))


def run(
    executor: RuncExecutor,
    rootfs: Path,
    script: str,
    mounts: list[MountSpec] | None = None,
    **kwargs: object,
) -> tuple[int, Output]:
    out = Output()
    spec = ProcessSpec(args=["/bin/sh", "-c", script], **kwargs)  # type: ignore[arg-type]
    code = asyncio.run(executor.run(str(rootfs), mounts or [], spec, on_output=out))
    return code, out


def runc_list(executor: RuncExecutor) -> str:
    return subprocess.run(
        executor.runc_command("list", "-q"), check=True, capture_output=True, text=True
    ).stdout


def mounts_under(*paths: Path) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        lines = fh.read().splitlines()
    return [line for line in lines if any(str(p) in line for p in paths)]


def test_check_passes_with_runc() -> None:
    asyncio.run(check())


def test_check_fails_for_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="cannot run"):
        asyncio.run(check(str(tmp_path / "no-runc")))


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_code_is_returned(executor: RuncExecutor, rootfs: Path, code: int) -> None:
    assert run(executor, rootfs, f"exit {code}")[0] == code


def test_killed_process_reports_128_plus_signal(executor: RuncExecutor, rootfs: Path) -> None:
    """SIGKILL from the host to the container's init gives exit code 137.

    The init is found by a token unique to this run, present in its command line both
    before (``sh -c "...; exec sleep TOKEN"``) and after the exec. Matching only the exec'd
    ``sleep`` raced with the exec: seen before it, nothing was killed and the test hung for
    the whole sleep (it did, under load); it could also kill another run's process.
    """
    token = str(10_000_000 + secrets.randbelow(80_000_000))

    def on_output(fd: int, data: bytes) -> None:
        if b"ready" in data:
            pids = _pids_with_marker(token)
            assert len(pids) == 1, pids
            os.kill(pids[0], signal.SIGKILL)

    spec = ProcessSpec(args=["sh", "-c", f"echo ready; exec sleep {token}"])
    run = executor.run(str(rootfs), [], spec, on_output=on_output)
    assert asyncio.run(asyncio.wait_for(run, 120)) == 137


def test_missing_executable_is_a_solve_error(executor: RuncExecutor, rootfs: Path) -> None:
    spec = ProcessSpec(args=["no-such-tool"])
    with pytest.raises(SolveError, match="executable file not found"):
        asyncio.run(executor.run(str(rootfs), [], spec))
    assert runc_list(executor) == ""
    assert os.listdir(executor.bundles_dir) == []


def test_stdout_and_stderr_keep_order_per_stream(executor: RuncExecutor, rootfs: Path) -> None:
    script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; usleep 20000; done"
    code, out = run(executor, rootfs, script)
    assert code == 0
    assert out.text(1) == "".join(f"out{i}\n" for i in range(1, 6))
    assert out.text(2) == "".join(f"err{i}\n" for i in range(1, 6))
    assert {fd for fd, _ in out.chunks} == {1, 2}


def test_output_is_streamed_while_the_process_runs(
    executor: RuncExecutor, rootfs: Path, tmp_path: Path
) -> None:
    """The process waits for a file that the callback creates on seeing its first line."""
    shared = tmp_path / "shared"
    shared.mkdir()
    seen: list[bytes] = []

    def on_output(fd: int, data: bytes) -> None:
        seen.append(data)
        if b"ready" in data:
            (shared / "go").touch()

    script = "echo ready; i=0; while [ ! -e /s/go ]; do usleep 10000; i=$((i+1)); "
    script += "[ $i -gt 1000 ] && exit 9; done; echo done"
    spec = ProcessSpec(args=["sh", "-c", script])
    mounts = [MountSpec(dest="/s", source=str(shared))]
    code = asyncio.run(executor.run(str(rootfs), mounts, spec, on_output=on_output))
    assert code == 0
    assert b"".join(seen) == b"ready\ndone\n"


def test_stdin_is_fed_to_the_process(executor: RuncExecutor, rootfs: Path) -> None:
    out = Output()
    spec = ProcessSpec(args=["sh", "-c", "tr a-z A-Z"])
    code = asyncio.run(executor.run(str(rootfs), [], spec, on_output=out, stdin=b"hello\n"))
    assert (code, out.text(1)) == (0, "HELLO\n")


def test_env_and_default_path(executor: RuncExecutor, rootfs: Path) -> None:
    code, out = run(executor, rootfs, 'echo "$PATH|$FOO"', env=["FOO=bar baz"])
    assert (code, out.text(1)) == (0, f"{DEFAULT_PATH}|bar baz\n")
    code, out = run(executor, rootfs, 'echo "$PATH"', env=["PATH=/bin:/custom"])
    assert out.text(1) == "/bin:/custom\n"


def test_cwd_is_created_owned_by_root(executor: RuncExecutor, rootfs: Path) -> None:
    code, out = run(executor, rootfs, "pwd; touch here", cwd="/work/deep/dir", user="alice")
    assert out.text(1) == "/work/deep/dir\n"
    # alice cannot write into a root-owned 0755 directory
    assert code != 0
    created = rootfs / "work" / "deep" / "dir"
    st = created.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    assert stat.S_IMODE((rootfs / "work").stat().st_mode) == 0o755


def test_cwd_through_a_symlink_stays_inside_rootfs(
    executor: RuncExecutor, rootfs: Path, tmp_path: Path
) -> None:
    (rootfs / "escape").symlink_to("/../../../../" + str(tmp_path / "outside"))
    code, _ = run(executor, rootfs, "pwd", cwd="/escape/sub")
    assert code == 0
    assert not (tmp_path / "outside").exists()
    assert (rootfs / str(tmp_path / "outside").lstrip("/") / "sub").is_dir()


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", "0 0 0"),
        ("1000", "1000 1000 1000 10 50"),
        ("1000:5", "1000 5 5"),
        ("4242", "4242 0 0"),
        ("alice", "1000 1000 1000 10 50"),
        ("alice:staff", "1000 50 50"),
        ("bob", "1001 1001 1001 50"),
        ("bob:0", "1001 0 0"),
    ],
)
def test_user_forms(executor: RuncExecutor, rootfs: Path, user: str, expected: str) -> None:
    code, out = run(executor, rootfs, 'echo "$(id -u) $(id -g) $(id -G)"', user=user)
    assert (code, out.text(1)) == (0, expected + "\n")


def test_unknown_user_is_a_clear_error(executor: RuncExecutor, rootfs: Path) -> None:
    with pytest.raises(SolveError) as info:
        run(executor, rootfs, "true", user="mallory")
    assert str(info.value) == "unable to find user mallory: no matching entries in passwd file"
    assert os.listdir(executor.bundles_dir) == []


def test_unknown_group_is_a_clear_error(executor: RuncExecutor, rootfs: Path) -> None:
    with pytest.raises(SolveError, match="unable to find group nogroup: no matching entries"):
        run(executor, rootfs, "true", user="alice:nogroup")


def test_hostname_default_and_custom(executor: RuncExecutor, rootfs: Path) -> None:
    assert run(executor, rootfs, "hostname")[1].text(1) == "buildkitsandbox\n"
    assert run(executor, rootfs, "hostname", hostname="box1")[1].text(1) == "box1\n"


def test_hosts_and_resolv_conf_are_generated_and_do_not_leak(
    executor: RuncExecutor, rootfs: Path
) -> None:
    before = tree_state(rootfs)
    code, out = run(
        executor,
        rootfs,
        "cat /etc/hosts; echo ---; grep -c nameserver /etc/resolv.conf; echo x >> /etc/hosts",
        hostname="myhost",
        extra_hosts=[("db.local", "10.1.2.3"), ("v6.local", "fd00::1")],
    )
    hosts, _, nameservers = out.text(1).partition("---\n")
    assert hosts.splitlines() == [
        "127.0.0.1\tlocalhost myhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "10.1.2.3\tdb.local",
        "fd00::1\tv6.local",
    ]
    assert int(nameservers) >= 1
    assert code != 0 and "Read-only file system" in out.text(2)
    assert not (rootfs / "etc" / "hosts").exists()
    assert not (rootfs / "etc" / "resolv.conf").exists()
    assert tree_state(rootfs) == before


def test_runtime_mount_points_stay_in_the_rootfs_as_in_buildkit(
    executor: RuncExecutor, rootfs: Path
) -> None:
    """BuildKit's first RUN layer on a base without /dev, /proc, /sys holds those directories
    (runc creates them; only the exec's own mounts are cleaned): the rootfs keeps them, mode
    0755, empty, while the run's own mount stubs (/etc/hosts, /mnt) are removed."""
    for point in RUNTIME_MOUNT_POINTS:
        (rootfs / point).rmdir()
    code, _ = run(executor, rootfs, "true")
    assert code == 0
    for point in RUNTIME_MOUNT_POINTS:
        st = os.lstat(rootfs / point)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755, point
        assert os.listdir(rootfs / point) == []
    assert not (rootfs / "etc" / "hosts").exists()
    assert not (rootfs / "etc" / "resolv.conf").exists()


def test_plain_true_leaves_rootfs_unchanged(executor: RuncExecutor, rootfs: Path) -> None:
    before = tree_state(rootfs)
    code, _ = run(executor, rootfs, "true")
    assert code == 0
    assert tree_state(rootfs) == before
    assert os.listdir(executor.bundles_dir) == []
    assert runc_list(executor) == ""


def test_existing_etc_hosts_is_shadowed_not_modified(executor: RuncExecutor, rootfs: Path) -> None:
    (rootfs / "etc" / "hosts").write_text("1.2.3.4 original\n")
    before = tree_state(rootfs)
    code, out = run(executor, rootfs, "cat /etc/hosts")
    assert code == 0 and "original" not in out.text(1)
    assert (rootfs / "etc" / "hosts").read_text() == "1.2.3.4 original\n"
    assert tree_state(rootfs) == before


def test_readonly_bind_refuses_writes(executor: RuncExecutor, rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "ro"
    src.mkdir()
    (src / "data").write_text("hello")
    mounts = [MountSpec(dest="/in", source=str(src), readonly=True)]
    code, out = run(executor, rootfs, "cat /in/data; echo x > /in/new", mounts)
    assert code != 0
    assert out.text(1) == "hello"
    assert "Read-only file system" in out.text(2)
    assert sorted(os.listdir(src)) == ["data"]


def test_readwrite_bind_writes_reach_the_host(
    executor: RuncExecutor, rootfs: Path, tmp_path: Path
) -> None:
    src = tmp_path / "rw"
    src.mkdir()
    before = tree_state(rootfs)
    mounts = [MountSpec(dest="/mnt/deep/out", source=str(src))]
    code, _ = run(executor, rootfs, "echo written > /mnt/deep/out/result", mounts)
    assert code == 0
    assert (src / "result").read_text() == "written\n"
    # the mount point stubs (/mnt, /mnt/deep, /mnt/deep/out) are gone again
    assert not (rootfs / "mnt").exists()
    assert tree_state(rootfs) == before


def test_relative_mount_dest_is_joined_onto_cwd(
    executor: RuncExecutor, rootfs: Path, tmp_path: Path
) -> None:
    src = tmp_path / "rel"
    src.mkdir()
    (src / "f").write_text("rel")
    mounts = [MountSpec(dest="sub", source=str(src), readonly=True)]
    code, out = run(executor, rootfs, "cat /app/sub/f", mounts, cwd="/app")
    assert (code, out.text(1)) == (0, "rel")


def test_bind_mounting_a_single_file(executor: RuncExecutor, rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "conf.txt"
    src.write_text("file-content")
    mounts = [MountSpec(dest="/opt/conf.txt", source=str(src), readonly=True)]
    code, out = run(executor, rootfs, "cat /opt/conf.txt", mounts)
    assert (code, out.text(1)) == (0, "file-content")
    assert not (rootfs / "opt").exists()


def test_tmpfs_size_limit(executor: RuncExecutor, rootfs: Path) -> None:
    mounts = [MountSpec(dest="/scratch", kind="tmpfs", tmpfs_size=1 << 20)]
    script = "dd if=/dev/zero of=/scratch/small bs=1024 count=512 2>/dev/null || exit 10; "
    script += "dd if=/dev/zero of=/scratch/big bs=1024 count=2048 2>/dev/null && exit 11; "
    script += "df -k /scratch | tail -n 1"
    code, out = run(executor, rootfs, script, mounts)
    assert code == 0, out.text(2)
    assert out.text(1).split()[1] == "1024"
    assert not (rootfs / "scratch").exists()


@pytest.mark.parametrize("network", ["none", "sandbox"])
def test_private_network_has_only_loopback(
    executor: RuncExecutor, rootfs: Path, network: str
) -> None:
    code, out = run(executor, rootfs, "ls /sys/class/net", network=network)
    assert (code, out.text(1).split()) == (0, ["lo"])
    code, out = run(executor, rootfs, "ip -o link show lo", network=network)
    assert "UP" in out.text(1)


def test_host_network_sees_host_interfaces(executor: RuncExecutor, rootfs: Path) -> None:
    code, out = run(executor, rootfs, "ls /sys/class/net", network="host")
    assert code == 0
    assert sorted(out.text(1).split()) == sorted(os.listdir("/sys/class/net"))


def test_sandbox_is_unprivileged_and_insecure_is_privileged(
    executor: RuncExecutor, rootfs: Path
) -> None:
    script = "grep CapEff /proc/self/status; mkdir -p /m; mount -t tmpfs none /m && echo mounted"
    code, out = run(executor, rootfs, script)
    assert "CapEff:\t00000000a80425fb" in out.text(1)
    assert "mounted" not in out.text(1)
    code, out = run(executor, rootfs, script + "; touch /sys/kernel/x 2>&1; true", insecure=True)
    assert code == 0
    assert "mounted" in out.text(1)
    assert "CapEff:\t000000" not in out.text(1)
    assert not (rootfs / "m").exists() or os.listdir(rootfs / "m") == []


def test_sandbox_seccomp_refuses_new_user_namespaces(executor: RuncExecutor, rootfs: Path) -> None:
    script = "unshare -U -r id -u; echo rc=$?; sh -c 'echo forked'"
    code, out = run(executor, rootfs, script)
    assert (code, out.text(1)) == (0, "rc=1\nforked\n")
    assert "Operation not permitted" in out.text(2)
    code, out = run(executor, rootfs, script, insecure=True)
    assert (code, out.text(1)) == (0, "0\nrc=0\nforked\n")


def test_standard_filesystems_and_devices(executor: RuncExecutor, rootfs: Path) -> None:
    script = (
        "for d in null zero full random urandom tty; do [ -c /dev/$d ] || echo missing $d; done; "
        "head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; "
        "[ -e /dev/ptmx ] && echo ptmx; echo s > /dev/shm/f && echo shm-ok; "
        "grep -E ' /dev/(pts|shm|mqueue) ' /proc/self/mounts | cut -d' ' -f3 | tr '\\n' ' '; "
        "echo; touch /sys/x 2>/dev/null || echo sys-ro; cat /proc/1/cmdline | tr '\\0' ' '"
    )
    code, out = run(executor, rootfs, script)
    assert code == 0, out.text(2)
    assert out.text(1).splitlines() == [
        "4",
        "null-ok",
        "ptmx",
        "shm-ok",
        "devpts tmpfs mqueue ",
        "sys-ro",
        "/bin/sh -c " + script + " ",
    ]


def test_missing_bind_source_is_a_solve_error(
    executor: RuncExecutor, rootfs: Path, tmp_path: Path
) -> None:
    before = tree_state(rootfs)
    mounts = [MountSpec(dest="/data", source=str(tmp_path / "does-not-exist"))]
    with pytest.raises(SolveError, match="runc run failed"):
        run(executor, rootfs, "true", mounts)
    assert runc_list(executor) == ""
    assert tree_state(rootfs) == before


def test_ulimits_are_applied(executor: RuncExecutor, rootfs: Path) -> None:
    code, out = run(executor, rootfs, "ulimit -n")
    assert out.text(1) == "1024\n"
    code, out = run(executor, rootfs, "ulimit -n", ulimits=[Ulimit("nofile", 256, 512)])
    assert (code, out.text(1)) == (0, "256\n")


def _pids_with_marker(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _cancel_after(executor: RuncExecutor, rootfs: Path, delay: float | None) -> set[str]:
    """Cancel the run once it printed "started" (delay None) or after ``delay`` seconds.

    Returns the id of the container it used (to look for leftovers of this run only).
    """
    ids: set[str] = set()

    async def main() -> None:
        started = asyncio.Event()

        def on_output(fd: int, data: bytes) -> None:
            if b"started" in data:
                started.set()

        spec = ProcessSpec(args=["sh", "-c", "echo started; exec sleep 4242"])
        mounts = [MountSpec(dest="/mnt/t", kind="tmpfs")]
        task = asyncio.create_task(executor.run(str(rootfs), mounts, spec, on_output=on_output))
        if delay is None:
            await asyncio.wait_for(started.wait(), 10)
        else:
            await asyncio.sleep(delay)
        ids.update(executor._active)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return ids


# None: once the process runs; the delays land in preparation, the runc spawn, container setup.
@pytest.mark.parametrize("delay", [None, 0.0, 0.001, 0.005, 0.01, 0.02, 0.04])
def test_cancellation_leaves_nothing_behind(
    executor: RuncExecutor, rootfs: Path, delay: float | None
) -> None:
    before = tree_state(rootfs)
    ids = _cancel_after(executor, rootfs, delay)
    assert runc_list(executor) == ""
    assert os.listdir(executor.bundles_dir) == []
    assert mounts_under(rootfs, Path(executor.state_dir)) == []
    assert _pids_with_marker("sleep\x004242") == []
    assert tree_state(rootfs) == before
    assert len(ids) == 1
    assert _container_cgroups(ids) == []


def _container_cgroups(ids: set[str]) -> list[str]:
    """cgroup directories named after one of the containers ``ids``.

    Only these ids: other bkcore builds may run on this machine meanwhile (another test
    run under load), and their live containers have cgroups named ``bk...`` too.
    """
    found: list[str] = []
    for pattern in ("bk*", "*/bk*", "*/*/bk*", "*/*/*/bk*", "*/*/*/*/bk*"):
        found.extend(str(p) for p in Path("/sys/fs/cgroup").glob(pattern) if p.name in ids)
    return found


def test_cancelling_during_cleanup_still_cleans(executor: RuncExecutor, rootfs: Path) -> None:
    """A second cancel while the container is being killed does not interrupt the cleanup."""

    async def main() -> None:
        started = asyncio.Event()
        spec = ProcessSpec(args=["sh", "-c", "echo started; exec sleep 4242"])
        task = asyncio.create_task(
            executor.run(str(rootfs), [], spec, on_output=lambda fd, d: started.set())
        )
        await asyncio.wait_for(started.wait(), 10)
        for _ in range(5):
            task.cancel()
            await asyncio.sleep(0.005)
        with pytest.raises(asyncio.CancelledError):
            await task

    before = tree_state(rootfs)
    asyncio.run(main())
    assert runc_list(executor) == ""
    assert os.listdir(executor.bundles_dir) == []
    assert _pids_with_marker("sleep\x004242") == []
    assert tree_state(rootfs) == before


def test_callback_error_kills_the_container(executor: RuncExecutor, rootfs: Path) -> None:
    def on_output(fd: int, data: bytes) -> None:
        raise RuntimeError("consumer broke")

    spec = ProcessSpec(args=["sh", "-c", "echo hi; exec sleep 4242"])
    with pytest.raises(RuntimeError, match="consumer broke"):
        asyncio.run(executor.run(str(rootfs), [], spec, on_output=on_output))
    assert runc_list(executor) == ""
    assert _pids_with_marker("sleep\x004242") == []


#: Bound of every in-container wait for another container's marker (usleep 10 ms each):
#: 120 s and more. Each wait ends as soon as the marker appears; only a broken executor (the
#: runs do not overlap) reaches the bound. A 10 s bound failed under heavy load, when the
#: two ``runc run`` start-ups were more than 10 s apart.
MARKER_WAIT_LOOPS = 12000


def test_two_runs_really_overlap(executor: RuncExecutor, rootfs: Path, tmp_path: Path) -> None:
    """Each container waits for the other's marker file: only concurrent runs can finish."""
    shared = tmp_path / "rendezvous"
    shared.mkdir()

    def spec(me: str, other: str) -> ProcessSpec:
        script = f"touch /r/{me}; i=0; while [ ! -e /r/{other} ]; do usleep 10000; "
        script += f"i=$((i+1)); [ $i -gt {MARKER_WAIT_LOOPS} ] && echo no /r/{other} && exit 7; "
        script += "done; exit 0"
        return ProcessSpec(args=["sh", "-c", script])

    mounts = [MountSpec(dest="/r", source=str(shared))]
    outputs = [Output(), Output()]

    async def main() -> list[int]:
        async with asyncio.TaskGroup() as tg:
            a = tg.create_task(
                executor.run(str(rootfs), mounts, spec("a", "b"), on_output=outputs[0])
            )
            b = tg.create_task(
                executor.run(str(rootfs), mounts, spec("b", "a"), on_output=outputs[1])
            )
        return [a.result(), b.result()]

    codes = asyncio.run(main())
    assert codes == [0, 0], [o.text(1) + o.text(2) for o in outputs]


def _pipe_holding_runtime(tmp_path: Path) -> str:
    """A runc wrapper that leaves a process holding the output pipes after runc exits."""
    wrapper = tmp_path / "runc-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" run "*) sleep 4545 & ;; esac\n'
        f'exec {shutil.which("runc")} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def test_a_process_holding_the_output_pipes_does_not_hang_the_run(
    rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runc's exit ends the run even if the pipes stay open (Python 3.11's Process.wait()
    on PIPE waited for them, and the cleanup after a cancel could then never end)."""
    import bkcore.workers.runc.executor as executor_module

    monkeypatch.setattr(executor_module, "_DRAIN_SECONDS", 0.5)
    executor = RuncExecutor(str(tmp_path / "state"), runc=_pipe_holding_runtime(tmp_path))
    try:
        code, out = run(executor, rootfs, "echo done")
        assert (code, out.text(1)) == (0, "done\n")
        assert len(_pids_with_marker("sleep\x004545")) == 1  # still holding the pipes

        async def cancel_running() -> None:
            started = asyncio.Event()
            spec = ProcessSpec(args=["sh", "-c", "echo started; exec sleep 4242"])
            task = asyncio.create_task(
                executor.run(str(rootfs), [], spec, on_output=lambda fd, d: started.set())
            )
            await asyncio.wait_for(started.wait(), 60)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(asyncio.wait_for(cancel_running(), 120))
        assert runc_list(executor) == ""
        assert _pids_with_marker("sleep\x004242") == []
    finally:
        for pid in _pids_with_marker("sleep\x004545"):
            os.kill(pid, signal.SIGKILL)


CRASHING_CHILD = """
import asyncio, sys
from bkcore.workers.runc import MountSpec, ProcessSpec, RuncExecutor

def on_output(fd, data):
    sys.stdout.write(data.decode())
    sys.stdout.flush()

spec = ProcessSpec(args=["sh", "-c", "echo started; exec sleep 4646"])
mounts = [MountSpec(dest="/mnt/crash", kind="tmpfs")]
asyncio.run(RuncExecutor(sys.argv[1]).run(sys.argv[2], mounts, spec, on_output=on_output))
"""


def test_recover_cleans_up_after_a_crashed_process(executor: RuncExecutor, rootfs: Path) -> None:
    before = tree_state(rootfs)
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_CHILD, executor.state_dir, str(rootfs)],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        # Bounded: a child that never starts its container fails the test, not hangs it.
        ready, _, _ = select.select([child.stdout], [], [], 300)
        assert ready, "the child did not start its container within 300 s"
        assert child.stdout.readline() == b"started\n"
    finally:
        child.kill()
        child.wait()
    leftover = runc_list(executor).split()
    assert len(leftover) == 1
    assert os.listdir(executor.bundles_dir) == leftover
    assert (rootfs / "mnt").exists()

    assert asyncio.run(executor.recover()) == leftover

    assert runc_list(executor) == ""
    assert os.listdir(executor.bundles_dir) == []
    assert tree_state(rootfs) == before
    assert _pids_with_marker("sleep\x004646") == []
    assert _container_cgroups(set(leftover)) == []
    assert asyncio.run(executor.recover()) == []


def test_recover_leaves_active_runs_alone(executor: RuncExecutor, rootfs: Path) -> None:
    async def main() -> tuple[list[str], int]:
        started = asyncio.Event()
        spec = ProcessSpec(args=["sh", "-c", "echo started; sleep 0.3; exit 5"])
        task = asyncio.create_task(
            executor.run(str(rootfs), [], spec, on_output=lambda fd, d: started.set())
        )
        await asyncio.wait_for(started.wait(), 10)
        recovered = await executor.recover()
        return recovered, await task

    assert asyncio.run(main()) == ([], 5)


def test_scratch_rootfs_gets_no_leftovers(executor: RuncExecutor, tmp_path: Path) -> None:
    """A rootfs with only a static binary: the /etc and /in stubs disappear; the runtime's
    mount points /dev, /proc, /sys stay (empty), as in BuildKit's first RUN layer."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    shutil.copy2(BUSYBOX, scratch / "busybox")
    src = tmp_path / "src"
    src.mkdir()
    before = tree_state(scratch)
    out = Output()
    spec = ProcessSpec(args=["/busybox", "sh", "-c", "/busybox ls / && /busybox cat /etc/hosts"])
    mounts = [MountSpec(dest="/in", source=str(src), readonly=True)]
    code = asyncio.run(executor.run(str(scratch), mounts, spec, on_output=out))
    assert code == 0, out.text(2)
    assert out.text(1).split()[:7] == ["busybox", "dev", "etc", "in", "proc", "sys", "127.0.0.1"]
    after = tree_state(scratch)
    assert sorted(after) == sorted([*before, *RUNTIME_MOUNT_POINTS])
    assert {k: v for k, v in after.items() if k in before and k != "."} == {
        k: v for k, v in before.items() if k != "."
    }
