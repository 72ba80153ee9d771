#!/usr/bin/env python3
"""Layer surgery with merge and diff: take only what a command added to the base image,
and stack it onto a separately built configuration layer.

    python examples/merge_diff.py | bkcore debug dump-llb
    python examples/merge_diff.py | buildctl build --output type=local,dest=out
"""

from __future__ import annotations

import argparse
import os
import sys

from bkcore import llb

BASE_IMAGE = os.environ.get("BKCORE_BASE_IMAGE", "127.0.0.1:5000/busybox:latest")


def build() -> llb.State:
    base = llb.image(BASE_IMAGE)
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
