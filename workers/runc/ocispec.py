"""Build the OCI runtime ``config.json`` (runtime-spec 1.0) for one container run."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

from .types import DEFAULT_PATH, MountSpec, ProcessSpec
from .users import ResolvedUser

OCI_VERSION = "1.0.2"

# Docker's default capability set.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# Every capability by number (Linux 5.9+); runc ignores ones the kernel does not know.
ALL_CAPABILITIES = tuple(
    "CAP_" + name
    for name in (
        "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
        "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
        "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
        "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
        "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
        "CHECKPOINT_RESTORE"
    ).split()
)


def bounding_capabilities(status: str | None = None) -> tuple[str, ...]:
    """The capabilities in our own bounding set (what a privileged container can get)."""
    if status is None:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            status = fh.read()
    mask = 0
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
    return tuple(name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)


MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Sandbox seccomp filter: allow by default, refuse (EPERM) the syscalls Docker's default
# profile blocks for a container without CAP_SYS_ADMIN and friends. A denylist is weaker
# than Docker's allowlist profile, but keeps kernel-wide and namespace-escaping calls out.
DENIED_SYSCALLS = (
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "move_mount",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "open_tree",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapon",
    "swapoff",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
)

_SHM_SIZE = "size=65536k"
_CLONE_NEWUSER = 0x10000000


def clean_dest(dest: str, cwd: str) -> str:
    """Absolute, normalised container path; a relative ``dest`` is joined onto ``cwd``."""
    joined = posixpath.join("/", cwd, dest)
    return posixpath.normpath(joined).replace("//", "/")


def _mount(dest: str, kind: str, source: str, options: Sequence[str]) -> dict[str, Any]:
    return {"destination": dest, "type": kind, "source": source, "options": list(options)}


def default_mounts(insecure: bool) -> list[dict[str, Any]]:
    sys_mode = "rw" if insecure else "ro"
    return [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", _SHM_SIZE]),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", _SHM_SIZE]),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", sys_mode]),
        _mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            ["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
    ]


def user_mount(spec: MountSpec, dest: str) -> dict[str, Any]:
    if spec.kind == "tmpfs":
        options = ["nosuid", "nodev", "mode=1777"]
        if spec.tmpfs_size > 0:
            options.append(f"size={spec.tmpfs_size}")
        if spec.readonly:
            options.append("ro")
        return _mount(dest, "tmpfs", "tmpfs", options)
    return _mount(dest, "bind", spec.source, ["rbind", "ro" if spec.readonly else "rw"])


def arrange_mounts(mounts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop earlier mounts shadowed by a later one on the same path; parents before children."""
    by_dest: dict[str, dict[str, Any]] = {}
    for mount in mounts:
        by_dest.pop(mount["destination"], None)
        by_dest[mount["destination"]] = mount
    ordered = list(by_dest.values())
    ordered.sort(key=lambda m: 0 if m["destination"] == "/" else m["destination"].count("/"))
    return ordered


def process_env(env: Sequence[str]) -> list[str]:
    out = list(env)
    if not any(item.startswith("PATH=") for item in out):
        out.append(f"PATH={DEFAULT_PATH}")
    return out


_RLIMIT_NAMES = {
    "core": "RLIMIT_CORE",
    "cpu": "RLIMIT_CPU",
    "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS",
    "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE",
    "nofile": "RLIMIT_NOFILE",
    "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS",
    "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING",
    "stack": "RLIMIT_STACK",
    "as": "RLIMIT_AS",
}


def rlimits(process: ProcessSpec) -> list[dict[str, Any]]:
    """containerd's default (nofile 1024) overridden by the requested ulimits."""
    limits: dict[str, tuple[int, int]] = {"RLIMIT_NOFILE": (1024, 1024)}
    for ulimit in process.ulimits:
        name = _RLIMIT_NAMES.get(ulimit.name.lower())
        if name is None:
            raise ValueError(f"unknown ulimit name {ulimit.name!r}")
        limits[name] = (ulimit.soft, ulimit.hard)
    return [{"type": k, "soft": s, "hard": h} for k, (s, h) in limits.items()]


def build_config(
    *,
    container_id: str,
    rootfs: str,
    process: ProcessSpec,
    user: ResolvedUser,
    hostname: str,
    mounts: Sequence[dict[str, Any]],
    privileged_caps: Sequence[str] = ALL_CAPABILITIES,
) -> dict[str, Any]:
    """The complete ``config.json`` document. ``mounts`` are the non-default mounts.

    ``privileged_caps`` is what an insecure process gets (pass ``bounding_capabilities()``:
    asking runc for a capability we do not hold ourselves fails the start).
    """
    caps = list(privileged_caps if process.insecure else DEFAULT_CAPABILITIES)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if process.network != "host":
        namespaces.append({"type": "network"})
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": {"devices": [{"allow": process.insecure, "access": "rwm"}]},
    }
    if process.cgroup_parent:
        linux["cgroupsPath"] = posixpath.join(process.cgroup_parent, container_id)
    if not process.insecure:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        linux["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                # clone() creating a user namespace is refused; clone3() (whose flags
                # seccomp cannot inspect) reports ENOSYS so libc falls back to clone().
                {
                    "names": ["clone"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 1,
                    "args": [
                        {
                            "index": 0,
                            "value": _CLONE_NEWUSER,
                            "valueTwo": _CLONE_NEWUSER,
                            "op": "SCMP_CMP_MASKED_EQ",
                        }
                    ],
                },
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            ],
        }
    user_doc: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        user_doc["additionalGids"] = list(user.additional_gids)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": user_doc,
            "args": list(process.args),
            "env": process_env(process.env),
            "cwd": clean_dest(process.cwd or "/", "/"),
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": rlimits(process),
            "noNewPrivileges": False,
        },
        "root": {"path": rootfs, "readonly": process.readonly_rootfs},
        "hostname": hostname,
        "mounts": arrange_mounts([*default_mounts(process.insecure), *mounts]),
        "linux": linux,
    }
