#!/usr/bin/env python3
"""Build from a git repository: check out a ref, inspect it with busybox tools, and export
a report together with the README of the checkout.

    python examples/git_source.py | bkcore debug dump-llb
    BKCORE_GIT_REPO=https://github.com/moby/buildkit.git BKCORE_GIT_REF=v0.11.6 \\
        python examples/git_source.py | buildctl build --output type=local,dest=out

BKCORE_GIT_REPO, BKCORE_GIT_REF and BKCORE_BASE_IMAGE choose the inputs.
"""

from __future__ import annotations

import argparse
import os
import sys

from bkcore import llb

BASE_IMAGE = os.environ.get("BKCORE_BASE_IMAGE", "127.0.0.1:5000/busybox:latest")
REPO = os.environ.get("BKCORE_GIT_REPO", "https://github.com/moby/buildkit.git")
REF = os.environ.get("BKCORE_GIT_REF", "v0.11.6")

REPORT = """\
set -e
{
  echo "repository: $REPO"
  echo "ref: $REF"
  echo "files: $(find . -type f | wc -l)"
  echo "directories: $(find . -type d | wc -l)"
  echo "bytes: $(find . -type f -exec cat {} + | wc -c)"
} > /out/report.txt
cat /out/report.txt
"""


def build() -> llb.State:
    checkout = llb.git(REPO, REF, keep_git_dir=False, custom_name=f"git {REPO}#{REF}")
    report = (
        llb.image(BASE_IMAGE)
        .with_env("REPO", REPO)
        .with_env("REF", REF)
        .with_cwd("/src")
        .sh(
            REPORT,
            mounts=[
                llb.bind("/src", checkout, readonly=True),
                llb.bind("/out", llb.scratch()),
            ],
            custom_name="summarise checkout",
        )
        .get_mount("/out")
    )
    return llb.scratch().file(
        llb.copy(report, "report.txt", "/report.txt").copy(
            checkout, "README*", "/", allow_wildcard=True, allow_empty_wildcard=True
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default=os.environ.get("BKCORE_PLATFORM"))
    args = parser.parse_args()
    if sys.stdout.isatty():
        print("refusing to write binary LLB to a terminal; pipe it", file=sys.stderr)
        return 2
    build().marshal(platform=args.platform).write(sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
