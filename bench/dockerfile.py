"""The same Dockerfiles through ``bkcore build`` and Docker 20.10's BuildKit, side by side.

Setup (all under one temporary directory, removed at the end): Debian's ``docker-registry`` on
a free loopback port with the conformance ``testbase`` image pushed to it
(``tests/conformance/make_base.py``; Docker treats 127.0.0.1 registries as insecure), so both
builders start ``FROM 127.0.0.1:PORT/testbase``. A ``dockerd`` (``--iptables=false
--bridge=none``, data/exec root in the temporary directory) is started unless ``--docker-host``
names one that answers; it is stopped at the end. A daemon that merely happens to be reachable
(``/var/run/docker.sock``) is not used by default: the cold rows run ``docker builder prune
-af`` on it, which would wipe its owner's build cache. Docker builds run as ``DOCKER_BUILDKIT=1
/usr/bin/docker build --network=none --progress=plain``; bkcore builds run embedded as
``python -m bkcore --root R build --frontend dockerfile.v0 --local context=C --local
dockerfile=C`` (a fresh process each time, start-up included, as ``docker build`` is a fresh
client process each time; the Docker daemon is already running, bkcore has no daemon).

Rows (each run of a row: one bkcore build and one Docker build, interleaved so background load
hits both alike):

* ``small build (cold)``: FROM, COPY of 3 small files, 3 RUNs, WORKDIR/ENV/LABEL/CMD;
* ``4 x RUN sleep 1 (cold)``: four independent stages (``RUN sleep 1``) merged by COPY --from in a
  final stage: measures whether independent stages run in parallel (floor ~1 s);
* ``ctx 10k/100MB cold``: a context of 10,000 files, 100 MB in all (1/10 random, rest text);
  ``COPY . /ctx`` + ``RUN`` counting the files;
* ``ctx 10k/100MB cached``: the same build again on the warm cache (context transfer = a scan
  of the 10,000 files and nothing else; every step cached);
* ``ctx 10k/100MB edit 1 file``: one file's content changed before each run (its transfer, the
  COPY of the whole context into a new layer and the RUN again);
* ``256MB layer -> tar (cold)``: ``RUN`` writing 128 MB random + 128 MB zeros, exported as a
  tar of the final root filesystem (both: ``--output type=tar,dest=F``);
* ``256MB layer -> image file (cold)``: the same build exported as an image archive: bkcore
  ``--output type=oci,dest=F`` (gzip layers, as BuildKit's default) vs Docker ``build -t`` (the
  moby exporter) followed by ``docker save -o F`` (uncompressed layers);
* ``256MB layer -> oci uncompressed (cold)``: bkcore ``type=oci,compression=uncompressed`` vs the
  same Docker ``build -t`` + ``docker save`` (both write the layer uncompressed).

"cold" = both caches cleared before the run (a new bkcore ``--root``; ``docker builder prune
-af`` and the bench's images removed), so each cold run also pulls the small base image.
Builds with no export write nothing for bkcore; Docker's plain ``docker build`` commits an
untagged image (its least work). One untimed build with each builder comes first (bytecode
cache, daemon set-up); bkcore runs with its bytecode cache even if PYTHONDONTWRITEBYTECODE is
set here, as an installed program would. Prints, per row, the median (and min) wall seconds of each
builder and the ratio bkcore / Docker (< 1 = bkcore faster) plus the load average at the start
and end. No figure is asserted. Needs root, runc, docker.io, docker-registry, skopeo and
busybox-static.

    python bench/dockerfile.py [--runs 5] [--rows small,parallel,ctx,export]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _registry import start_registry

REPO = Path(__file__).resolve().parents[1]
# bkcore runs as an installed program does: with its bytecode cache (an environment that turns
# .pyc writing off would make every run compile ~200 modules again). main() points
# PYTHONPYCACHEPREFIX into the scratch directory (a re-install of the editable tree meanwhile
# does not drop it).
BK_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
DOCKER = "/usr/bin/docker"
ROW_GROUPS = ("small", "parallel", "ctx", "export")


def wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"{what} did not start")
        time.sleep(0.1)


class Docker:
    """A reachable dockerd: the given one, or one started here (stopped by ``close``)."""

    def __init__(self, base: Path, host: str | None) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(os.environ, DOCKER_BUILDKIT="1")
        if host and self._ping(host):
            self.env["DOCKER_HOST"] = host
            return
        if host:
            sys.exit(f"no Docker daemon answers at {host}")
        base.mkdir(parents=True)
        sock = f"unix://{base}/sock"
        self.log = open(base / "dockerd.log", "wb")  # closed in close()
        self.proc = subprocess.Popen(
            [
                "dockerd", "--iptables=false", "--bridge=none",
                "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
                "--pidfile", str(base / "pid"), "-H", sock,
            ],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.env["DOCKER_HOST"] = sock
        wait_for("dockerd", lambda: self._ping(sock), self.proc)

    def _ping(self, host: str) -> bool:
        env = dict(self.env, DOCKER_HOST=host)
        done = subprocess.run([DOCKER, "version"], env=env, capture_output=True, check=False)
        return done.returncode == 0

    def run(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run([DOCKER, *argv], env=self.env, capture_output=True, check=False)
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace")[-3000:]
            sys.exit(f"docker {' '.join(argv[:4])} failed:\n{err}")
        return done

    def clear(self) -> None:
        self.run("builder", "prune", "-af")
        names = self.run("images", "-q", "--filter", "reference=bkbench*").stdout.split()
        if names:
            self.run("rmi", "-f", *(n.decode() for n in names))
        self.run("image", "prune", "-f")

    def close(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def write_context(ctx: Path, files: int, total: int) -> list[Path]:
    """``files`` files in 100 directories, ``total`` bytes in all (every 10th one random)."""
    rng = random.Random(5)
    size = total // files
    paths = []
    text = (b"the quick brown fox jumps over the lazy dog\n" * (size // 44 + 1))[:size]
    for i in range(files):
        d = ctx / f"d{i % 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i:05d}.dat"
        p.write_bytes(rng.randbytes(size) if i % 10 == 0 else text)
        paths.append(p)
    return paths


SMALL = """\
FROM {base}
ENV APP=/app GREETING=hello
WORKDIR /app
COPY a.txt b.txt ./
COPY conf/ ./conf/
RUN echo "$GREETING" > greeting.txt && cat a.txt b.txt > ab.txt
RUN mkdir -p /data && cp -r /app/conf /data/ && ls -la /data/conf > /data/listing
RUN chown -R app:app /data && sed -e s/x=1/x=2/ /data/conf/app.ini > /data/app.ini
LABEL org.example.bench=small
USER app
CMD ["cat", "/app/greeting.txt"]
"""

PARALLEL = """\
FROM {base} AS s1
RUN sleep 1 && echo one > /r1
FROM {base} AS s2
RUN sleep 1 && echo two > /r2
FROM {base} AS s3
RUN sleep 1 && echo three > /r3
FROM {base} AS s4
RUN sleep 1 && echo four > /r4
FROM {base}
COPY --from=s1 /r1 /r/
COPY --from=s2 /r2 /r/
COPY --from=s3 /r3 /r/
COPY --from=s4 /r4 /r/
RUN cat /r/r1 /r/r2 /r/r3 /r/r4 > /all
"""

CONTEXT = """\
FROM {base}
COPY . /ctx
RUN find /ctx -type f | wc -l > /count && du -s /ctx >> /count
"""

EXPORT = """\
FROM {base}
RUN head -c 134217728 /dev/urandom > /random.bin && head -c 134217728 /dev/zero > /zeros.bin
"""


class Bench:
    def __init__(self, tmp: Path, base: str, docker: Docker) -> None:
        self.tmp = tmp
        self.base = base
        self.docker = docker
        self.results: list[tuple[str, list[float], list[float]]] = []
        self.counter = 0

    def context(self, name: str, dockerfile: str) -> Path:
        ctx = self.tmp / "ctx" / name
        ctx.mkdir(parents=True, exist_ok=True)
        (ctx / "Dockerfile").write_text(dockerfile.format(base=self.base))
        return ctx

    def fresh(self, name: str) -> Path:
        self.counter += 1
        return self.tmp / "out" / f"{name}{self.counter}"

    def bk(self, root: Path, ctx: Path, output: str | None) -> float:
        argv = [
            sys.executable, "-m", "bkcore", "--root", str(root), "build",
            "--frontend", "dockerfile.v0", "--progress", "plain",
            "--local", f"context={ctx}", "--local", f"dockerfile={ctx}",
        ]  # fmt: skip
        if output:
            argv += ["--output", output]
        return timed(argv, BK_ENV)

    def dk(self, ctx: Path, extra: list[str], then: list[str] | None = None) -> float:
        argv = [DOCKER, "build", "--network=none", "--progress=plain", *extra, str(ctx)]
        start = time.perf_counter()
        timed(argv, self.docker.env)
        if then:
            timed([DOCKER, *then], self.docker.env)
        return time.perf_counter() - start

    def cold_row(
        self,
        row: str,
        ctx: Path,
        runs: int,
        bk_output: Callable[[Path], str | None],
        dk_args: Callable[[Path], tuple[list[str], list[str] | None]],
    ) -> None:
        bk_times, dk_times = [], []
        for _ in range(runs):
            root = self.fresh("root")
            out = self.fresh("bkout")
            out.parent.mkdir(parents=True, exist_ok=True)
            bk_times.append(self.bk(root, ctx, bk_output(out)))
            shutil.rmtree(root)
            clean(out)
            self.docker.clear()
            out = self.fresh("dkout")
            extra, then = dk_args(out)
            dk_times.append(self.dk(ctx, extra, then))
            clean(out)
            self.docker.clear()
        self.add(row, bk_times, dk_times)

    def add(self, row: str, bk: list[float], dk: list[float]) -> None:
        self.results.append((row, bk, dk))
        print(f"  {row}: bkcore {fmt(bk)}  docker {fmt(dk)}", flush=True)

    def warm_up(self) -> None:
        """One untimed build with each (bytecode caches, the daemon's first-build set-up)."""
        ctx = self.small_context()
        root = self.fresh("root")
        self.bk(root, ctx, None)
        shutil.rmtree(root)
        self.docker.clear()
        self.dk(ctx, [])
        self.docker.clear()

    def small_context(self) -> Path:
        ctx = self.context("small", SMALL)
        (ctx / "a.txt").write_text("alpha\n")
        (ctx / "b.txt").write_text("beta\n")
        (ctx / "conf").mkdir(exist_ok=True)
        (ctx / "conf" / "app.ini").write_text("[app]\nx=1\n")
        return ctx

    def small(self, runs: int) -> None:
        ctx = self.small_context()
        self.cold_row("small build (cold)", ctx, runs, lambda _: None, lambda _: ([], None))

    def parallel(self, runs: int) -> None:
        ctx = self.context("parallel", PARALLEL)
        self.cold_row("4 x RUN sleep 1 (cold)", ctx, runs, lambda _: None, lambda _: ([], None))

    def ctx(self, runs: int) -> None:
        ctx = self.context("big", CONTEXT)
        files = write_context(ctx, 10_000, 100_000_000)
        self.cold_row("ctx 10k/100MB cold", ctx, runs, lambda _: None, lambda _: ([], None))
        root = self.fresh("root")
        self.bk(root, ctx, None)  # warm both caches
        self.docker.clear()
        self.dk(ctx, [])
        bk_c, dk_c, bk_e, dk_e = [], [], [], []
        for _ in range(runs):
            bk_c.append(self.bk(root, ctx, None))
            dk_c.append(self.dk(ctx, []))
        for i in range(runs):
            files[1234].write_bytes(f"edit {i} before bkcore\n".encode() * 100)
            bk_e.append(self.bk(root, ctx, None))
            files[1234].write_bytes(f"edit {i} before docker\n".encode() * 100)
            dk_e.append(self.dk(ctx, []))
        shutil.rmtree(root)
        self.docker.clear()
        self.add("ctx 10k/100MB cached", bk_c, dk_c)
        self.add("ctx 10k/100MB edit 1 file", bk_e, dk_e)

    def export(self, runs: int) -> None:
        ctx = self.context("export", EXPORT)

        def save(out: Path) -> tuple[list[str], list[str] | None]:
            return ["-t", "bkbench:export"], ["save", "-o", str(out), "bkbench:export"]

        self.cold_row(
            "256MB layer -> tar (cold)",
            ctx,
            runs,
            lambda out: f"type=tar,dest={out}",
            lambda out: ([f"--output=type=tar,dest={out}"], None),
        )
        self.cold_row(
            "256MB layer -> image file (cold)",
            ctx,
            runs,
            lambda out: f"type=oci,dest={out}",
            save,
        )
        self.cold_row(
            "256MB layer -> oci uncompressed (cold)",
            ctx,
            runs,
            lambda out: f"type=oci,dest={out},compression=uncompressed",
            save,
        )


def timed(argv: list[str], env: dict[str, str] | None) -> float:
    for attempt in range(3):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, check=False)
        took = time.perf_counter() - start
        # A development checkout being re-installed meanwhile (scripts/dev-install) briefly
        # lacks modules: run that build again rather than lose the whole bench.
        if done.returncode == 0 or b"No module named 'bkcore" not in done.stderr or attempt == 2:
            break
        print("  (bkcore modules missing for a moment: build run again)", file=sys.stderr)
        time.sleep(5)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace")[-3000:]
        sys.exit(f"{' '.join(argv[:8])} ... failed:\n{err}")
    return took


def clean(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def fmt(times: list[float]) -> str:
    return f"median {statistics.median(times):6.2f}s min {min(times):6.2f}s"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per row (median reported)")
    ap.add_argument(
        "--rows", default=",".join(ROW_GROUPS), help=f"comma-separated subset of {ROW_GROUPS}"
    )
    ap.add_argument("--dir", default=None, help="scratch directory (default: system temp)")
    ap.add_argument(
        "--docker-host",
        default=None,
        help="use this running dockerd (unix://...); its build cache is pruned!",
    )
    args = ap.parse_args()
    groups = [g.strip() for g in args.rows.split(",") if g.strip()]
    if unknown := set(groups) - set(ROW_GROUPS):
        sys.exit(f"unknown rows {sorted(unknown)}; choose from {ROW_GROUPS}")
    if os.geteuid() != 0:
        sys.exit("run as root (runc, dockerd)")
    for tool in (DOCKER, "dockerd", "runc", "skopeo", "busybox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    cpus = os.cpu_count()
    start_load = loadavg()
    print(f"load average at start: {start_load} ({cpus} CPUs); runs per row: {args.runs}")
    with tempfile.TemporaryDirectory(prefix="bkdf-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        BK_ENV["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        registry, host = start_registry(tmp / "registry", timeout=60)
        docker: Docker | None = None
        try:
            subprocess.run(
                [sys.executable, str(REPO / "tests" / "conformance" / "make_base.py"),
                 "--registry", host],
                check=True, capture_output=True,
            )  # fmt: skip
            docker = Docker(tmp / "docker", args.docker_host)
            bench = Bench(tmp, f"{host}/testbase", docker)
            bench.warm_up()
            for group in groups:
                getattr(bench, group)(args.runs)
            print()
            print(f"{'row':<40}{'bkcore s':>10}{'docker s':>10}{'ratio':>8}")
            for row, bk, dk in bench.results:
                b, d = statistics.median(bk), statistics.median(dk)
                print(f"{row:<40}{b:>10.2f}{d:>10.2f}{b / d:>8.2f}")
            print("ratio = bkcore median / docker median (< 1: bkcore faster)")
            print(f"load average: start {start_load}, end {loadavg()} ({cpus} CPUs)")
        finally:
            if docker is not None:
                docker.close()
            registry.terminate()
            registry.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
