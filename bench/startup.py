"""Start-up time of ``bkcore --help`` and ``bkcore plugins`` against ``python -c pass``.

Runs every command N times as a subprocess (after warm-up runs), interleaved with the
anchor in the same invocation, and prints the median and minimum wall time, the median CPU
time in ms and the wall-time ratio to the anchor. The budget is 150 ms (median wall time)
per command. ``--importtime`` also prints the slowest imports of ``bkcore plugins``
(cumulative, from ``python -X importtime``).

    python bench/startup.py [--runs 30] [--importtime]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUDGET_MS = 150.0


def bkcore_command() -> list[str]:
    """The installed console script next to this interpreter (not a shell shim)."""
    script = Path(sys.executable).with_name("bkcore")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "bkcore.cli.main"]


class Sample:
    """Wall and CPU (user + system) times in ms of one command, and its failed runs."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.failures = 0


def measure(commands: dict[str, list[str]], runs: int, warmup: int = 3) -> dict[str, Sample]:
    """Time every command; runs interleave the commands so that background load hits every
    command alike. CPU time (from the children's rusage) is less sensitive to that load."""
    results = {label: Sample() for label in commands}
    for index in range(warmup + runs):
        for label, argv in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter_ns()
            done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elapsed = (time.perf_counter_ns() - start) / 1e6
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if index >= warmup:
                sample = results[label]
                sample.wall.append(elapsed)
                cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
                sample.cpu.append(cpu * 1000)
                sample.failures += done.returncode != 0
    return results


def slowest_imports(argv: list[str], count: int = 12) -> list[tuple[int, str]]:
    python = [sys.executable, "-X", "importtime", "-m", "bkcore.cli.main", *argv[1:]]
    result = subprocess.run(python, capture_output=True, text=True, check=True)
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # top-level imports only (indentation = nesting)
            rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per command (30)")
    parser.add_argument("--importtime", action="store_true", help="show the slowest imports")
    args = parser.parse_args()

    bkcore = bkcore_command()
    commands = {
        "python -c pass (anchor)": [sys.executable, "-c", "pass"],
        "bkcore --help": [*bkcore, "--help"],
        "bkcore plugins": [*bkcore, "plugins"],
    }
    print(f"interpreter: {sys.executable} ({sys.version.split()[0]}); bkcore: {bkcore[0]}")
    print(f"{args.runs} runs each\n")
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
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.importtime:
        print("\nslowest top-level imports of `bkcore plugins` (cumulative us):")
        for micros, name in slowest_imports(commands["bkcore plugins"]):
            print(f"  {micros:>8}  {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
