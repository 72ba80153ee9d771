"""What this worker is (platforms, labels) and whether runc works here."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from typing import Any

from bkcore.errors import PluginError

LABEL_PREFIX = "org.mobyproject.buildkit.worker."

# uname machine -> (OCI architecture, variant)
_ARCHES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""),
    "loongarch64": ("loong64", ""),
}

# x86-64 micro-architecture levels (psABI): flags each level adds over the previous one.
_AMD64_LEVELS = (
    ("v2", {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    ("v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ("v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def host_platforms(machine: str | None = None, cpuinfo: str | None = None) -> list[dict[str, str]]:
    """The host platform in OCI form, then the amd64 micro-architecture levels it supports."""
    machine = machine or os.uname().machine
    arch, variant = _ARCHES.get(machine, (machine, ""))
    first: dict[str, str] = {"os": "linux", "architecture": arch}
    if variant:
        first["variant"] = variant
    platforms = [first]
    if arch == "amd64":
        if cpuinfo is None:
            try:
                with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                    cpuinfo = fh.read()
            except OSError:
                cpuinfo = ""
        flags = _cpu_flags(cpuinfo)
        for level, needed in _AMD64_LEVELS:
            if not needed <= flags:
                break
            platforms.append({"os": "linux", "architecture": "amd64", "variant": level})
    return platforms


def format_platform(p: dict[str, str]) -> str:
    """``os/arch[/variant]``."""
    parts = [p["os"], p["architecture"]]
    if p.get("variant"):
        parts.append(p["variant"])
    return "/".join(parts)


_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def load_worker_id(state_dir: str) -> str:
    """The worker's random id, created once and kept in ``state_dir/workerid``."""
    path = os.path.join(state_dir, "workerid")
    try:
        with open(path, encoding="ascii") as fh:
            existing = fh.read().strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    os.makedirs(state_dir, exist_ok=True)
    new_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(25))
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(new_id + "\n")
    try:
        os.link(tmp, path)  # atomic create-if-absent: a concurrent creator wins consistently
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    with open(path, encoding="ascii") as fh:
        return fh.read().strip()


def worker_info(snapshotter: str = "overlayfs", network: str = "host") -> dict[str, Any]:
    """Platforms and BuildKit-style labels describing this worker.

    ``network`` is the label BuildKit reports for the default network provider; there is no
    CNI here, so the sandbox network is a private namespace with loopback only.
    """
    hostname = socket.gethostname()
    return {
        "platforms": host_platforms(),
        "labels": {
            LABEL_PREFIX + "executor": "oci",
            LABEL_PREFIX + "hostname": hostname,
            LABEL_PREFIX + "network": network,
            LABEL_PREFIX + "oci.process-mode": "sandbox",
            LABEL_PREFIX + "snapshotter": snapshotter,
        },
    }


async def check(runc: str = "runc") -> None:
    """Raise ``PluginError`` unless ``runc`` can be run and we have the rights to use it."""
    try:
        proc = await asyncio.create_subprocess_exec(
            runc,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise PluginError(f"runc worker unavailable: cannot run {runc}: {exc.strerror}") from exc
    out, _ = await proc.communicate()
    if proc.returncode != 0 or not out.startswith(b"runc version"):
        detail = out.decode(errors="replace").strip().splitlines()[:1]
        raise PluginError(f"runc worker unavailable: {runc} --version failed: {detail}")
    if os.geteuid() != 0:
        raise PluginError("runc worker unavailable: it needs root (rootless mode is not supported)")
