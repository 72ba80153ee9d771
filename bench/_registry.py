"""Shared by the bench scripts that need a registry: Debian's ``docker-registry`` on a free
loopback port with its storage under a scratch directory.

    from _registry import running_registry
    with running_registry(work / "registry") as host:   # "127.0.0.1:PORT"
        ...

(bench scripts run as ``python bench/NAME.py``, so this directory is on ``sys.path``.)
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["free_port", "running_registry", "sha", "start_registry"]


def sha(data: bytes) -> str:
    """``sha256:<hex>`` of ``data`` (an OCI digest)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(host: str) -> bool:
    try:
        urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
    except urllib.error.HTTPError:
        return True  # a registry answering 401/404 is up
    except OSError:
        return False
    return True


def start_registry(base: Path, timeout: float = 20) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``docker-registry`` storing under ``base``; returns (process, ``host:port``).

    Exits the bench with a message when the binary is missing or the registry does not
    answer ``/v2/`` within ``timeout`` seconds. The caller kills the process.
    """
    binary = shutil.which("docker-registry")
    if binary is None:
        sys.exit("docker-registry not installed (apt-get install docker-registry)")
    host = f"127.0.0.1:{free_port()}"
    (base / "storage").mkdir(parents=True)
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'storage'}\n"
        f"http:\n  addr: {host}\n"
    )
    proc = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while not _answers(host):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            sys.exit("docker-registry did not start")
        time.sleep(0.05)
    return proc, host


@contextmanager
def running_registry(base: Path) -> Iterator[str]:
    """A registry for the ``with`` block (killed and reaped afterwards); yields its host."""
    proc, host = start_registry(base)
    try:
        yield host
    finally:
        proc.kill()
        proc.wait()
