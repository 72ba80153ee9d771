#!/usr/bin/env python3
"""Build from a git repository: check out a ref, inspect it with busybox tools, and export
a report together with the README of the checkout.

    python examples/git_source.py | bkcore debug dump-llb
    python examples/git_source.py | buildctl build --output type=local,dest=out

The default repository is local: a `git daemon` on 127.0.0.1 serving example.git, e.g.

    git init -q -b main /tmp/repos/example.git && ...commit some files...
    git daemon --export-all --base-path=/tmp/repos --listen=127.0.0.1 &

BKCORE_GIT_REPO (default git://127.0.0.1:9418/example.git), BKCORE_GIT_REF (default main)
and BKCORE_BASE (see _base.py) choose the inputs; any remote works, e.g.
BKCORE_GIT_REPO=https://github.com/moby/buildkit.git BKCORE_GIT_REF=v0.11.6.
"""

from __future__ import annotations

import os
import sys

from _base import base_fs, run

from bkcore import llb

REPO = os.environ.get("BKCORE_GIT_REPO", "git://127.0.0.1:9418/example.git")
REF = os.environ.get("BKCORE_GIT_REF", "main")

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
        base_fs()
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


if __name__ == "__main__":
    sys.exit(run(build, __doc__))
