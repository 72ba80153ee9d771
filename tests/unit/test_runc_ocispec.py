"""The OCI config.json document (no root needed)."""

from __future__ import annotations

from typing import Any

import pytest

from bkcore.workers.runc.ocispec import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    arrange_mounts,
    bounding_capabilities,
    build_config,
    clean_dest,
    user_mount,
)
from bkcore.workers.runc.types import DEFAULT_PATH, MountSpec, ProcessSpec, Ulimit
from bkcore.workers.runc.users import ResolvedUser


def config(process: ProcessSpec, **kw: Any) -> dict[str, Any]:
    return build_config(
        container_id="bk1",
        rootfs="/r",
        process=process,
        user=kw.pop("user", ResolvedUser(0, 0)),
        hostname="h",
        mounts=kw.pop("mounts", []),
        **kw,
    )


def test_defaults() -> None:
    doc = config(ProcessSpec(args=["sh"], env=["A=1"], cwd="work"))
    proc = doc["process"]
    assert proc["args"] == ["sh"]
    assert proc["env"] == ["A=1", f"PATH={DEFAULT_PATH}"]
    assert proc["cwd"] == "/work"
    assert proc["terminal"] is False
    assert proc["capabilities"]["bounding"] == list(DEFAULT_CAPABILITIES)
    assert len(DEFAULT_CAPABILITIES) == 14
    assert proc["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]
    assert doc["root"] == {"path": "/r", "readonly": False}
    assert doc["hostname"] == "h"
    kinds = {n["type"] for n in doc["linux"]["namespaces"]}
    assert kinds == {"pid", "ipc", "uts", "mount", "network"}
    assert "seccomp" in doc["linux"] and "/proc/kcore" in doc["linux"]["maskedPaths"]
    assert doc["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    dests = [m["destination"] for m in doc["mounts"]]
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"} <= set(dests)
    sys_mount = next(m for m in doc["mounts"] if m["destination"] == "/sys")
    assert "ro" in sys_mount["options"]


def test_host_network_has_no_network_namespace() -> None:
    doc = config(ProcessSpec(args=["sh"], network="host"))
    assert "network" not in {n["type"] for n in doc["linux"]["namespaces"]}
    doc = config(ProcessSpec(args=["sh"], network="none"))
    assert "network" in {n["type"] for n in doc["linux"]["namespaces"]}


def test_insecure_is_privileged() -> None:
    caps = ("CAP_SYS_ADMIN", "CAP_CHOWN")
    doc = config(ProcessSpec(args=["sh"], insecure=True), privileged_caps=caps)
    assert doc["process"]["capabilities"]["effective"] == list(caps)
    assert "seccomp" not in doc["linux"] and "maskedPaths" not in doc["linux"]
    assert doc["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    sys_mount = next(m for m in doc["mounts"] if m["destination"] == "/sys")
    assert "rw" in sys_mount["options"]


def test_user_and_groups() -> None:
    doc = config(ProcessSpec(args=["sh"]), user=ResolvedUser(5, 6, (7, 8)))
    assert doc["process"]["user"] == {"uid": 5, "gid": 6, "additionalGids": [7, 8]}


def test_ulimits_and_unknown_name() -> None:
    doc = config(ProcessSpec(args=["sh"], ulimits=[Ulimit("nofile", 1, 2), Ulimit("nproc", 3, 4)]))
    assert doc["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2},
        {"type": "RLIMIT_NPROC", "soft": 3, "hard": 4},
    ]
    with pytest.raises(ValueError, match="unknown ulimit"):
        config(ProcessSpec(args=["sh"], ulimits=[Ulimit("bogus", 1, 1)]))


def test_cgroup_parent() -> None:
    doc = config(ProcessSpec(args=["sh"], cgroup_parent="/build"))
    assert doc["linux"]["cgroupsPath"] == "/build/bk1"
    assert "cgroupsPath" not in config(ProcessSpec(args=["sh"]))["linux"]


def test_user_mounts() -> None:
    assert user_mount(MountSpec("/a", "/src", readonly=True), "/a") == {
        "destination": "/a",
        "type": "bind",
        "source": "/src",
        "options": ["rbind", "ro"],
    }
    tmpfs = user_mount(MountSpec("/t", kind="tmpfs", tmpfs_size=4096), "/t")
    assert tmpfs["type"] == "tmpfs" and "size=4096" in tmpfs["options"]
    assert not any(
        o.startswith("size=") for o in user_mount(MountSpec("/t", kind="tmpfs"), "/t")["options"]
    )


def test_arrange_mounts_dedups_and_orders_parents_first() -> None:
    def m(dest: str, src: str) -> dict[str, Any]:
        return {"destination": dest, "type": "bind", "source": src, "options": []}

    out = arrange_mounts(
        [m("/a/b/c", "1"), m("/dev/shm", "default"), m("/a", "2"), m("/dev/shm", "user")]
    )
    assert [(x["destination"], x["source"]) for x in out] == [
        ("/a", "2"),
        ("/dev/shm", "user"),
        ("/a/b/c", "1"),
    ]


def test_user_mount_overrides_default_mount() -> None:
    doc = config(
        ProcessSpec(args=["sh"]),
        mounts=[user_mount(MountSpec("/dev/shm", kind="tmpfs"), "/dev/shm")],
    )
    shm = [m for m in doc["mounts"] if m["destination"] == "/dev/shm"]
    assert len(shm) == 1 and shm[0]["source"] == "tmpfs"


@pytest.mark.parametrize(
    ("dest", "cwd", "expected"),
    [
        ("/a/../b", "/", "/b"),
        ("sub", "/w", "/w/sub"),
        ("//x//y/", "/", "/x/y"),
        ("../..", "/w", "/"),
    ],
)
def test_clean_dest(dest: str, cwd: str, expected: str) -> None:
    assert clean_dest(dest, cwd) == expected


def test_bounding_capabilities_from_status() -> None:
    status = "Name:\tx\nCapBnd:\t000001fffeffffff\n"
    caps = bounding_capabilities(status)
    assert "CAP_SYS_RESOURCE" not in caps
    assert "CAP_SYS_ADMIN" in caps and "CAP_CHECKPOINT_RESTORE" in caps
    assert len(caps) == len(ALL_CAPABILITIES) - 1
