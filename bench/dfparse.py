"""Dockerfile parsing speed: parser + typed instructions on a generated 1,000-line Dockerfile.

Prints the median and minimum CPU time of ``parse()`` (text -> tree), ``parse_dockerfile()``
(tree -> stages) and of expanding every word of the file with the shell lexer, next to an
anchor run in the same invocation: Python's ``shlex.split`` of every line (the standard
library's shell tokenizer doing comparable work on the same text). Ratios are ours / anchor.

    python bench/dfparse.py [--runs 50] [--lines 1000]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import time
from collections.abc import Callable


def make_dockerfile(lines: int) -> str:
    """A realistic Dockerfile of about ``lines`` lines (stages, continuations, heredocs...)."""
    out = ["# syntax=docker/dockerfile:1", "ARG BASE=busybox", "ARG VERSION=1.0"]
    stage = 0
    while len(out) < lines:
        out += [
            "",
            f"# stage {stage} builds part {stage}",
            f"FROM --platform=$BUILDPLATFORM ${{BASE}}:latest AS stage{stage}",
            "ARG VERSION",
            f'ENV APP_HOME=/opt/app{stage} PATH="/opt/app{stage}/bin:$PATH" MODE=release',
            f'LABEL org.example.stage="{stage}" org.example.version="${{VERSION:-dev}}"',
            "WORKDIR $APP_HOME",
            "RUN --mount=type=cache,target=/root/.cache,id=c$VERSION \\",
            "    set -eux; \\",
            f"    echo building {stage} && \\",
            "    mkdir -p out && \\",
            "    echo done > out/status",
            f"COPY --chown=1000:1000 --chmod=0644 src/{stage}/ ./src/",
            "RUN <<EOF",
            "#!/bin/sh",
            f"echo heredoc {stage} > /out.txt",
            "EOF",
            'HEALTHCHECK --interval=30s --timeout=5s CMD ["/bin/true"]',
            "EXPOSE 8080/tcp 9090",
            f'CMD ["/opt/app{stage}/bin/run", "--flag"]',
        ]
        stage += 1
    return "\n".join(out[:lines]) + "\n"


def timed(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """CPU milliseconds of each function per run; the functions take turns in every round so
    that background load hits them alike."""
    out: dict[str, list[float]] = {label: [] for label in fns}
    for fn in fns.values():
        fn()
    for _ in range(runs):
        for label, fn in fns.items():
            start = time.process_time_ns()
            fn()
            out[label].append((time.process_time_ns() - start) / 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--lines", type=int, default=1000)
    args = ap.parse_args()

    from bkcore.frontends.dockerfile import instructions as ins
    from bkcore.frontends.dockerfile.parser import parse
    from bkcore.frontends.dockerfile.shell import Lexer

    text = make_dockerfile(args.lines)
    data = text.encode()
    result = parse(data)
    stages, _ = ins.parse_dockerfile(result.ast)
    lexer = Lexer()
    env = {"BASE": "busybox", "VERSION": "1.0", "APP_HOME": "/opt/app", "PATH": "/bin"}
    words = [arg for node in result.ast.children for arg in node.args()]
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]

    def anchor() -> None:
        for line in lines:
            try:
                shlex.split(line, posix=True)
            except ValueError:
                pass

    def expand_all() -> None:
        for word in words:
            lexer.process_word(word, env)

    anchor_label = "anchor: shlex.split of every line"
    samples = timed(
        {
            anchor_label: anchor,
            "parse (text -> tree)": lambda: parse(data),
            "parse_dockerfile (tree -> stages)": lambda: ins.parse_dockerfile(result.ast),
            f"expand {len(words)} words": expand_all,
        },
        args.runs,
    )
    anchor_med = statistics.median(samples[anchor_label])
    print(
        f"{args.lines}-line Dockerfile: {len(result.ast.children)} instructions, "
        f"{len(stages)} stages, {args.runs} runs (CPU time)"
    )
    print(f"{'what':40} {'median ms':>10} {'min ms':>8} {'ratio':>7}")
    total = 0.0
    for label, values in samples.items():
        med = statistics.median(values)
        if label != anchor_label:
            total += med
        print(f"{label:40} {med:10.2f} {min(values):8.2f} {med / anchor_med:7.2f}")
    label = "parse + parse_dockerfile + expand"
    print(f"{label:40} {total:10.2f} {'':8} {total / anchor_med:7.2f}")


if __name__ == "__main__":
    main()
