"""``bkcore --addr ADDR build`` (through a ``bkcore daemon``) vs the same build embedded
(``bkcore --root R build``), each a fresh client process as a user runs it.

Setup (a temporary directory, removed at the end): a daemon subprocess on a unix socket with
its own root; a build context of N small files plus one 8 MB file and a Dockerfile
``FROM scratch`` / ``COPY . /ctx`` / ``COPY big.bin /big.bin``, exported with
``--output type=local``. One untimed build of each first (bytecode cache, daemon warm-up).

Rows (median and min wall seconds of each, ratio remote / embedded; > 1 = the daemon path is
slower): ``cached`` (the same build again: context scan and the local export),
``edit 1 file`` (one file changed before each run). Usage: ``python bench/remote_build.py
[--runs 5] [--files 2000]``.

Every process runs with a bytecode cache (``PYTHONPYCACHEPREFIX`` in the temporary directory,
so nothing is written to the tree) as an installed bkcore has: with
``PYTHONDONTWRITEBYTECODE`` set, each fresh process would compile every module it imports
and that, not the build, would dominate both columns.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = dict(os.environ)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def process_cpu(pid: int | None) -> float:
    """CPU seconds of a running process (all threads), from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(cmd: list[str], daemon_pid: int | None = None) -> tuple[float, float]:
    """Wall seconds of ``cmd`` and the CPU seconds it cost: its own, plus the daemon's
    during the run (the machine is shared: CPU time is the steadier figure)."""
    c0, d0 = children_cpu(), process_cpu(daemon_pid)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False, env=ENV)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.decode()}")
    return took, children_cpu() - c0 + process_cpu(daemon_pid) - d0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bk-remote-bench-"))
    ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    ENV["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    daemon = None
    try:
        ctx = tmp / "ctx"
        (ctx / "d").mkdir(parents=True)
        for i in range(args.files):
            (ctx / "d" / f"f{i}.txt").write_text(f"file {i}\n" * 20)
        (ctx / "big.bin").write_bytes(os.urandom(8 << 20))
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx\nCOPY big.bin /big.bin\n")
        sock = tmp / "bk.sock"
        log = open(tmp / "daemon.log", "wb")
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bkcore",
                "--root",
                str(tmp / "droot"),
                "daemon",
                "--addr",
                f"unix://{sock}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=ENV,
        )
        while b"listening on" not in (tmp / "daemon.log").read_bytes():
            if daemon.poll() is not None:
                raise SystemExit((tmp / "daemon.log").read_text())
            time.sleep(0.05)
        base = [sys.executable, "-m", "bkcore"]
        builders = {
            "remote": [*base, "--addr", f"unix://{sock}"],
            "embedded": [*base, "--root", str(tmp / "eroot")],
        }

        def build(name: str) -> tuple[float, float]:
            out = tmp / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            argv = builders[name] + ["build", "--progress", "plain", "-o", str(out), str(ctx)]
            return run(argv, daemon.pid if name == "remote" and daemon is not None else None)

        for name in builders:
            build(name)  # untimed warm-up
        rows: dict[str, dict[str, list[tuple[float, float]]]] = {"cached": {}, "edit 1 file": {}}
        for row in rows:
            for n in range(args.runs):
                for name in builders:  # interleaved
                    if row == "edit 1 file":
                        (ctx / "d" / "f0.txt").write_text(f"edited {name} {n} {time.time()}\n")
                    rows[row].setdefault(name, []).append(build(name))
        print(f"{args.files} files + 8 MB, {args.runs} runs, load {os.getloadavg()[0]:.2f}")
        print("wall s (median/min) and CPU s (median; remote = client + daemon)")
        print(
            f"{'row':<14}{'remote wall':>16}{'embedded wall':>16}{'ratio':>7}"
            f"{'remote cpu':>12}{'embedded cpu':>14}{'ratio':>7}"
        )
        for row, times in rows.items():
            r = [w for w, _ in times["remote"]]
            e = [w for w, _ in times["embedded"]]
            rc = statistics.median(c for _, c in times["remote"])
            ec = statistics.median(c for _, c in times["embedded"])
            print(
                f"{row:<14}{statistics.median(r):>9.3f}/{min(r):.3f}"
                f"{statistics.median(e):>10.3f}/{min(e):.3f}"
                f"{statistics.median(r) / statistics.median(e):>7.2f}"
                f"{rc:>12.3f}{ec:>14.3f}{rc / ec:>7.2f}"
            )
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
