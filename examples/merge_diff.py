#!/usr/bin/env python3
"""Layer surgery with merge and diff: take only what a command added to the base image,
and stack it onto a separately built configuration layer.

    python examples/merge_diff.py | bkcore debug dump-llb
    python examples/merge_diff.py | buildctl build --output type=local,dest=out
    BKCORE_BASE=local python examples/merge_diff.py \\
        | bkcore build --local base=/tmp/rootfs --output type=local,dest=out
"""

from __future__ import annotations

import sys

from _base import base_fs, run

from bkcore import llb


def build() -> llb.State:
    base = base_fs()
    installed = base.sh(
        "mkdir -p /opt/tool && echo 'echo tool v1' > /opt/tool/run && chmod +x /opt/tool/run",
        custom_name="install tool",
    ).root()
    # only the files the command created, without the busybox base underneath
    tool_layer = llb.diff(base, installed, custom_name="tool layer")
    config = llb.scratch().file(
        llb.mkdir("/etc/tool", 0o755, parents=True).mkfile(
            "/etc/tool/config", 0o644, "mode=example\n"
        )
    )
    return llb.merge([tool_layer, config], custom_name="tool + config")


if __name__ == "__main__":
    sys.exit(run(build, __doc__))
