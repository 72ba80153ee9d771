"""Start-up time of ``bkcore --help`` and ``bkcore plugins`` against ``python -c pass``, and
the CPU a ``bkcore build`` process spends around a cached build, embedded and as a daemon client.

Runs every command N times as a subprocess (after warm-up runs), interleaved with the
anchor in the same invocation, and prints the median and minimum wall time, the median CPU
time in ms and the wall-time ratio to the anchor. The budget is 150 ms (median wall time)
per command. ``--importtime`` also prints the slowest imports of ``bkcore plugins``
(cumulative, from ``python -X importtime``).

Build rows (``--builds``; root and runc needed): the cached build of ``examples/dockerfile``
with ``--opt context:busybox=local:rootfs --local rootfs=DIR`` (a busybox rootfs from
``scripts/make-rootfs``) and ``--output type=local``. "Cached" as BuildKit caches it: a local
source is keyed by its session, so WORKDIR, COPY and RUN of the first stage run again on every
build (buildkitd v0.11.6 does the same) and the final stage's COPY is cached by content.

* ``build embedded``: ``bkcore --root R build ...`` as a fresh process, beside its anchor
  ``same build, warm process``: the same build repeated inside one Python process that has
  already built it once (imports done, caches warm), timed per build -- the difference is
  what a fresh process pays before and around the build;
* ``build via daemon``: ``bkcore --addr unix://S build ...`` against a ``bkcore daemon``
  started here (its own root), beside ``buildctl`` (BuildKit's Go client, ``--buildctl PATH``
  or on PATH) driving the same build on the same daemon; without buildctl the row has no
  anchor. ``daemon cpu`` is the daemon's CPU per build (from /proc), the other columns are
  the client's (with its children).

CPU is user + system of the process and the children it waited for (runc). Every subprocess
runs with a bytecode cache (PYTHONDONTWRITEBYTECODE dropped, PYTHONPYCACHEPREFIX in a
temporary directory) as an installed bkcore has; ``--no-bytecode-cache`` keeps the caller's
environment (then every bkcore module is compiled from source in every process when
PYTHONDONTWRITEBYTECODE is set, as in this development environment).

    python bench/startup.py [--runs 30] [--importtime] [--builds] [--build-runs 9]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BUDGET_MS = 150.0
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dockerfile"
ENV = dict(os.environ)


def bkcore_command() -> list[str]:
    """The installed console script next to this interpreter (not a shell shim)."""
    script = Path(sys.executable).with_name("bkcore")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "bkcore"]


class Sample:
    """Wall and CPU (user + system) times in ms of one command, and its failed runs."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.failures = 0
        self.extra: float | None = None  # a build row's daemon CPU (median ms)


def measure_hooked(
    commands: dict[str, list[str]],
    runs: int,
    hooks: dict[str, Callable[[], Callable[[], None]]],
    warmup: int = 1,
) -> dict[str, Sample]:
    """:func:`measure` with a hook around every run (``hooks[label]()`` before, its result
    after); warm-up runs are timed by hooks too (the caller keeps the last ``runs``)."""
    results = {label: Sample() for label in commands}
    for index in range(warmup + runs):
        for label, argv in commands.items():
            after = hooks[label]()
            before = cpu_ms(resource.RUSAGE_CHILDREN)
            start = time.perf_counter_ns()
            done = subprocess.run(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
            )
            elapsed = (time.perf_counter_ns() - start) / 1e6
            after()
            if index >= warmup:
                sample = results[label]
                sample.wall.append(elapsed)
                sample.cpu.append(cpu_ms(resource.RUSAGE_CHILDREN) - before)
                sample.failures += done.returncode != 0
    return results


def cpu_ms(who: int) -> float:
    usage = resource.getrusage(who)
    return (usage.ru_utime + usage.ru_stime) * 1000


def measure(commands: dict[str, list[str]], runs: int, warmup: int = 3) -> dict[str, Sample]:
    """Time every command; runs interleave the commands so that background load hits every
    command alike. CPU time (from the children's rusage) is less sensitive to that load."""
    results = {label: Sample() for label in commands}
    for index in range(warmup + runs):
        for label, argv in commands.items():
            before = cpu_ms(resource.RUSAGE_CHILDREN)
            start = time.perf_counter_ns()
            done = subprocess.run(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
            )
            elapsed = (time.perf_counter_ns() - start) / 1e6
            if index >= warmup:
                sample = results[label]
                sample.wall.append(elapsed)
                sample.cpu.append(cpu_ms(resource.RUSAGE_CHILDREN) - before)
                sample.failures += done.returncode != 0
    return results


def warm_builds(argv: list[str], runs: int) -> None:
    """(``--warm-process``) Build ``argv`` once, then ``runs`` times more in this process;
    print one JSON line per timed build: wall and CPU ms (this process and its children)."""
    import contextlib
    import io

    from bkcore.cli.main import main as bkcore_main

    for index in range(runs + 1):
        before = cpu_ms(resource.RUSAGE_SELF) + cpu_ms(resource.RUSAGE_CHILDREN)
        start = time.perf_counter_ns()
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            status = bkcore_main(argv)
        elapsed = (time.perf_counter_ns() - start) / 1e6
        cpu = cpu_ms(resource.RUSAGE_SELF) + cpu_ms(resource.RUSAGE_CHILDREN) - before
        if status != 0:
            sys.stderr.write(sink.getvalue())
        if index:
            print(json.dumps({"wall": elapsed, "cpu": cpu, "failed": status != 0}), flush=True)


def daemon_cpu_ms(pid: int) -> float:
    """User + system CPU of a running process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


class BuildRows:
    """The build rows: a rootfs, state roots, a daemon; everything under one temporary dir."""

    def __init__(self, tmp: Path, bkcore: list[str], buildctl: str | None) -> None:
        self.tmp = tmp
        self.bkcore = bkcore
        self.buildctl = buildctl
        self.rootfs = tmp / "rootfs"
        subprocess.run(
            [str(REPO / "scripts" / "make-rootfs"), str(self.rootfs)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.socket = tmp / "bkcored.sock"
        self.daemon: subprocess.Popen[bytes] | None = None

    def build_args(self, out: str) -> list[str]:
        return [
            "build", str(EXAMPLE), "--opt", "context:busybox=local:rootfs",
            "--local", f"rootfs={self.rootfs}",
            "--output", f"type=local,dest={self.tmp / out}", "--progress", "plain",
        ]  # fmt: skip

    def embedded(self) -> list[str]:
        return [*self.bkcore, "--root", str(self.tmp / "root"), *self.build_args("out-e")]

    def client(self) -> list[str]:
        return [*self.bkcore, "--addr", f"unix://{self.socket}", *self.build_args("out-c")]

    def buildctl_build(self) -> list[str]:
        assert self.buildctl
        return [
            self.buildctl, "--addr", f"unix://{self.socket}", "build",
            "--frontend", "dockerfile.v0",
            "--local", f"context={EXAMPLE}", "--local", f"dockerfile={EXAMPLE}",
            "--opt", "context:busybox=local:rootfs", "--local", f"rootfs={self.rootfs}",
            "--output", f"type=local,dest={self.tmp / 'out-b'}", "--progress", "plain",
        ]  # fmt: skip

    def start_daemon(self) -> None:
        argv = [*self.bkcore, "--root", str(self.tmp / "droot"), "daemon"]
        argv += ["--addr", f"unix://{self.socket}"]
        with open(self.tmp / "daemon.log", "wb") as log:  # the daemon keeps its own copy
            self.daemon = subprocess.Popen(argv, stdout=log, stderr=log, env=ENV)
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bkcore daemon did not start: {(self.tmp / 'daemon.log')}")
            time.sleep(0.05)

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()

    def warm_process(self, runs: int) -> Sample:
        argv = [sys.executable, __file__, "--warm-process", str(runs), "--",
                "--root", str(self.tmp / "root"), *self.build_args("out-w")]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, env=ENV)
        sample = Sample()
        for line in done.stdout.splitlines():
            row = json.loads(line)
            sample.wall.append(row["wall"])
            sample.cpu.append(row["cpu"])
            sample.failures += row["failed"]
        if done.returncode != 0 or len(sample.wall) != runs:
            sample.failures += 1
            sys.stderr.write(done.stderr[-2000:])
        return sample

    def run(self, runs: int) -> list[tuple[str, Sample, str]]:
        """Rows (label, sample, anchor label); every command built once untimed first."""
        rows: list[tuple[str, Sample, str]] = []
        commands = {"build embedded (fresh process)": self.embedded()}
        self.start_daemon()
        try:
            commands["build via daemon (bkcore client)"] = self.client()
            if self.buildctl:
                commands["build via daemon (buildctl)"] = self.buildctl_build()
            daemon_cpu: dict[str, list[float]] = {label: [] for label in commands}
            assert self.daemon is not None
            pid = self.daemon.pid

            def hook(label: str) -> Callable[[], Callable[[], None]]:
                def before() -> Callable[[], None]:
                    start = daemon_cpu_ms(pid)
                    return lambda: daemon_cpu[label].append(daemon_cpu_ms(pid) - start)

                return before

            results = measure_hooked(commands, runs, {k: hook(k) for k in commands})
        finally:
            self.stop_daemon()
        warm = self.warm_process(runs)
        rows.append(("same build, warm process", warm, ""))
        rows.append(("build embedded (fresh process)", results["build embedded (fresh process)"],
                     "same build, warm process"))  # fmt: skip
        anchor = "build via daemon (buildctl)" if self.buildctl else ""
        if self.buildctl:
            rows.append((anchor, results[anchor], ""))
        rows.append(("build via daemon (bkcore client)",
                     results["build via daemon (bkcore client)"], anchor))  # fmt: skip
        for label, cpus in daemon_cpu.items():
            if label.startswith("build via daemon"):
                results[label].extra = statistics.median(cpus[-runs:]) if cpus else None
        return rows


def slowest_imports(argv: list[str], count: int = 12) -> list[tuple[int, str]]:
    python = [sys.executable, "-X", "importtime", "-m", "bkcore", *argv[1:]]
    result = subprocess.run(python, capture_output=True, text=True, check=True, env=ENV)
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # top-level imports only (indentation = nesting)
            rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:count]


def print_builds(rows: list[tuple[str, Sample, str]]) -> bool:
    """Print the build rows; True when a run failed."""
    by_label = {label: sample for label, sample, _ in rows}
    header = f"{'build (cached)':<34}{'median ms':>10}{'min ms':>9}{'cpu ms':>9}{'cpu min':>9}"
    print(f"\n{header}{'daemon cpu':>11}  cpu vs anchor")
    failed = False
    for label, sample, anchor_label in rows:
        if not sample.wall:
            print(f"{label:<34}  no runs")
            failed = True
            continue
        cpu = statistics.median(sample.cpu)
        extra = f"{sample.extra:>11.1f}" if sample.extra is not None else f"{'':>11}"
        versus = ""
        anchor = by_label.get(anchor_label)
        if anchor is not None and anchor.cpu:
            base = statistics.median(anchor.cpu)
            versus = f"{cpu / base:.2f}x (+{cpu - base:.0f} ms) vs {anchor_label}"
        if sample.failures:
            failed = True
            versus += f" ({sample.failures} runs FAILED)"
        print(
            f"{label:<34}{statistics.median(sample.wall):>10.1f}{min(sample.wall):>9.1f}"
            f"{cpu:>9.1f}{min(sample.cpu):>9.1f}{extra}  {versus}"
        )
    return failed


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--warm-process":  # internal: see warm_builds
        warm_builds(sys.argv[4:] if sys.argv[3] == "--" else sys.argv[3:], int(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per command (30)")
    parser.add_argument("--importtime", action="store_true", help="show the slowest imports")
    parser.add_argument("--builds", action="store_true", help="add the build rows (root, runc)")
    parser.add_argument("--build-runs", type=int, default=9, help="timed runs per build row (9)")
    parser.add_argument("--buildctl", help="BuildKit's buildctl (default: on PATH, if any)")
    parser.add_argument(
        "--no-bytecode-cache", action="store_true", help="keep PYTHONDONTWRITEBYTECODE if set"
    )
    args = parser.parse_args()

    bkcore = bkcore_command()
    with tempfile.TemporaryDirectory(prefix="bk-startup-") as scratch:
        if not args.no_bytecode_cache:
            ENV.pop("PYTHONDONTWRITEBYTECODE", None)
            ENV["PYTHONPYCACHEPREFIX"] = os.path.join(scratch, "pycache")
        return run(args, bkcore, Path(scratch))


def run(args: argparse.Namespace, bkcore: list[str], scratch: Path) -> int:
    commands = {
        "python -c pass (anchor)": [sys.executable, "-c", "pass"],
        "bkcore --help": [*bkcore, "--help"],
        "bkcore plugins": [*bkcore, "plugins"],
    }
    print(f"interpreter: {sys.executable} ({sys.version.split()[0]}); bkcore: {bkcore[0]}")
    cache = "no bytecode cache" if "PYTHONDONTWRITEBYTECODE" in ENV else "bytecode cache on"
    print(f"{args.runs} runs each; {cache}; load average at start: {loadavg()}\n")
    header = f"{'command':<26}{'median ms':>10}{'min ms':>9}{'cpu ms':>9}{'x anchor':>10}"
    print(f"{header}  budget {BUDGET_MS:.0f} ms (median wall)")
    anchor = 0.0
    failed = False
    for label, sample in measure(commands, args.runs).items():
        median = statistics.median(sample.wall)
        anchor = anchor or median
        verdict = ""
        if not label.endswith("(anchor)"):
            ok = median < BUDGET_MS
            failed = failed or not ok
            verdict = "ok" if ok else "OVER BUDGET"
        if sample.failures:
            failed = True
            verdict += f" ({sample.failures} runs FAILED)"
        cpu = statistics.median(sample.cpu)
        print(
            f"{label:<26}{median:>10.1f}{min(sample.wall):>9.1f}{cpu:>9.1f}"
            f"{median / anchor:>10.2f}  {verdict}"
        )
    if args.builds:
        if os.geteuid() != 0 or shutil.which("runc") is None:
            print("\nbuild rows skipped: they need root and runc")
        else:
            buildctl = args.buildctl or shutil.which("buildctl")
            rows = BuildRows(scratch, bkcore, buildctl).run(args.build_runs)
            failed = print_builds(rows) or failed
            if not buildctl:
                print("(no buildctl: the daemon client row has no anchor)")
    print(f"load average at end: {loadavg()}")
    if args.importtime:
        print("\nslowest top-level imports of `bkcore plugins` (cumulative us):")
        for micros, name in slowest_imports(commands["bkcore plugins"]):
            print(f"  {micros:>8}  {name}")
    return 1 if failed else 0


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
