"""Start-up time of ``bkcore --help`` and ``bkcore plugins`` against ``python -c pass``.

Runs every command N times as a subprocess (after warm-up runs), interleaved with the
anchor in the same invocation, and prints the median and minimum wall time in ms and the
ratio to the anchor. The budget is 150 ms per command. ``--importtime`` also prints the
slowest imports of ``bkcore plugins`` (cumulative, from ``python -X importtime``).

    python bench/startup.py [--runs 30] [--importtime]
"""

from __future__ import annotations

import argparse
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


def measure(
    commands: dict[str, list[str]], runs: int, warmup: int = 3
) -> dict[str, tuple[list[float], int]]:
    """Wall times (ms) and failure count per command; runs interleave the commands so that
    background load hits every command alike."""
    results: dict[str, tuple[list[float], int]] = {label: ([], 0) for label in commands}
    for index in range(warmup + runs):
        for label, argv in commands.items():
            start = time.perf_counter_ns()
            done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elapsed = (time.perf_counter_ns() - start) / 1e6
            if index >= warmup:
                times, failures = results[label]
                times.append(elapsed)
                results[label] = (times, failures + (done.returncode != 0))
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
    print(f"{args.runs} runs each, median / min wall time\n")
    print(
        f"{'command':<26}{'median ms':>10}{'min ms':>9}{'x anchor':>10}  budget {BUDGET_MS:.0f} ms"
    )
    anchor = 0.0
    failed = False
    for label, (times, failures) in measure(commands, args.runs).items():
        median = statistics.median(times)
        anchor = anchor or median
        verdict = ""
        if not label.endswith("(anchor)"):
            ok = median < BUDGET_MS
            failed = failed or not ok
            verdict = "ok" if ok else "OVER BUDGET"
        if failures:
            failed = True
            verdict += f" ({failures} runs FAILED)"
        print(f"{label:<26}{median:>10.1f}{min(times):>9.1f}{median / anchor:>10.2f}  {verdict}")
    if args.importtime:
        print("\nslowest top-level imports of `bkcore plugins` (cumulative us):")
        for micros, name in slowest_imports(commands["bkcore plugins"]):
            print(f"  {micros:>8}  {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
