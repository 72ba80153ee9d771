"""Wall time of a fully cached ``bkcore build`` rebuild, next to its floors, in one invocation.

The graph: a busybox rootfs (``scripts/make-rootfs``, sent as a local source) copied onto
scratch, ``--steps`` chained shell steps, a COPY of a context of ``--files`` small files, a
step reading them, and a local export. Measured, each as a fresh ``bkcore build`` process on
the same state root (runs interleaved with the anchors so background load hits all alike):

* ``cold``: the first build on an empty root (runs once per round, each on a new root);
* ``cached``: the same graph again (every op vertex a cache hit; checked from the progress);
* ``cached+edit``: a context file outside the COPY's selection changed first (still cached);
* anchors: ``python -c pass`` (interpreter floor), ``bkcore --help`` (CLI start-up floor) and
  ``cp -a`` of rootfs + context (what any build has to move at least once).

Prints median and minimum wall ms, median CPU ms of the child, and the ratio to
``bkcore --help``. Needs root, runc and busybox-static. No figure is asserted.

    python bench/cached_rebuild.py [--rounds 7] [--steps 5] [--files 2000]
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bkcore() -> list[str]:
    return [sys.executable, "-m", "bkcore"]


def definition(steps: int) -> bytes:
    from bkcore import llb

    local = llb.local("rootfs", shared_key_hint="rootfs")
    state = llb.scratch().file(llb.copy(local, "/", "/", dir_contents_only=True))
    for i in range(steps):
        state = state.sh(f"echo step {i} >> /steps.txt", custom_name=f"step {i}").root()
    ctx = llb.local("ctx", shared_key_hint="ctx", include_patterns=["src/"])
    state = state.file(llb.copy(ctx, "/src", "/src", create_dest_path=True), custom_name="copy src")
    state = state.sh("find /src -type f | wc -l > /count.txt", custom_name="count").root()
    out = llb.scratch().file(
        llb.copy(state, "/count.txt", "/count.txt").copy(state, "/steps.txt", "/steps.txt")
    )
    data: bytes = out.marshal(local_unique_id="benchcachedrebuild").to_bytes()
    return data


class Timer:
    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(
        self, argv: list[str], stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(argv, input=stdin, capture_output=True, check=False)
        self.wall.append((time.perf_counter() - start) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu.append(
            ((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) * 1000
        )
        if done.returncode != 0:
            raise SystemExit(f"{argv[:6]} failed: {done.stderr.decode(errors='replace')[-2000:]}")
        return done


def cached_flags(stderr: bytes) -> dict[str, bool]:
    """Vertex name -> cached, from rawjson progress (last snapshot of each vertex)."""
    last: dict[str, dict[str, object]] = {}
    for line in stderr.splitlines():
        if line.startswith(b"{"):
            for v in json.loads(line).get("vertexes", []):
                last[v["digest"]] = v
    return {str(v["name"]): bool(v.get("cached")) for v in last.values()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("runc") is None:
        raise SystemExit("needs root and runc")

    with tempfile.TemporaryDirectory(prefix="bench-cached-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run(
            [str(REPO / "scripts" / "make-rootfs"), str(tmp / "rootfs")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        ctx = tmp / "ctx"
        (ctx / "src").mkdir(parents=True)
        for i in range(args.files):
            (ctx / "src" / f"f{i:05}.txt").write_text(f"file {i}\n" * 8)
        (ctx / "outside.txt").write_text("0\n")
        data = definition(args.steps)

        def build_argv(root: Path, out: Path) -> list[str]:
            return [
                *bkcore(), "--root", str(root), "build", "--progress", "rawjson",
                "--local", f"rootfs={tmp / 'rootfs'}", "--local", f"ctx={ctx}",
                "--output", f"type=local,dest={out}",
            ]  # fmt: skip

        timers = {name: Timer() for name in ("python -c pass", "bkcore --help", "cp -a")}
        timers.update({name: Timer() for name in ("cold", "cached", "cached+edit")})
        root = tmp / "root"
        timers["cold"].run(build_argv(root, tmp / "out"), data)  # warm-up, fills `root`
        timers["cold"].wall.clear()
        timers["cold"].cpu.clear()
        not_cached: set[str] = set()
        for r in range(args.rounds):
            timers["python -c pass"].run([sys.executable, "-c", "pass"])
            timers["bkcore --help"].run([*bkcore(), "--help"])
            copy = tmp / f"copy{r}"
            timers["cp -a"].run(
                ["sh", "-c", f"mkdir {copy} && cp -a {tmp / 'rootfs'} {ctx} {copy}/"]
            )
            shutil.rmtree(copy)
            timers["cold"].run(build_argv(tmp / f"cold{r}", tmp / f"cold-out{r}"), data)
            done = timers["cached"].run(build_argv(root, tmp / "out"), data)
            (ctx / "outside.txt").write_text(f"{r + 1}\n")
            edited = timers["cached+edit"].run(build_argv(root, tmp / "out"), data)
            for result in (done, edited):
                flags = cached_flags(result.stderr)
                not_cached.update(
                    n
                    for n, c in flags.items()
                    if not c and not n.startswith(("local://", "export"))
                )
        help_ms = statistics.median(timers["bkcore --help"].wall)
        print(f"{'command':<16}{'median ms':>11}{'min ms':>9}{'cpu ms':>9}{'x help':>8}")
        for name, t in timers.items():
            med = statistics.median(t.wall)
            print(
                f"{name:<16}{med:>11.0f}{min(t.wall):>9.0f}{statistics.median(t.cpu):>9.0f}"
                f"{med / help_ms:>8.2f}"
            )
        print(f"rounds={args.rounds} steps={args.steps} files={args.files}")
        print("vertices not cached in rebuilds:", ", ".join(sorted(not_cached)) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
