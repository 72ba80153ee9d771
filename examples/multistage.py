#!/usr/bin/env python3
"""Multi-stage build with busybox only: generate a small site with sh, pack it with tar and
gzip in a second stage, and copy the archive plus a checksum into an empty final image.

    python examples/multistage.py | bkcore debug dump-llb
    scripts/make-rootfs /tmp/rootfs
    BKCORE_BASE=local python examples/multistage.py \\
        | bkcore build --local base=/tmp/rootfs --output type=local,dest=out

BKCORE_BASE chooses the busybox base (see _base.py; default: an image from the registry).
"""

from __future__ import annotations

import sys

from _base import base_fs, run

from bkcore import llb

GENERATE = """\
set -e
mkdir -p pages bin
for n in 1 2 3; do
  printf '<h1>page %s</h1>\\n' "$n" > "pages/page$n.html"
done
printf '#!/bin/sh\\necho "hello from $SITE_NAME"\\n' > bin/hello
chmod 0755 bin/hello
echo "$SITE_NAME" > NAME
"""

PACK = """\
set -e
tar -C /src -cf /tmp/site.tar .
gzip -9 -n -c /tmp/site.tar > /out/site.tar.gz
cd /out && sha256sum site.tar.gz > SHA256SUMS
"""


def build() -> llb.State:
    base = base_fs()

    # stage 1: generate the sources in /src
    sources = (
        base.with_env("SITE_NAME", "bkcore-example")
        .file(llb.mkdir("/src", 0o755))
        .with_cwd("/src")
        .sh(GENERATE, custom_name="generate site")
        .root()
    )

    # stage 2: pack them; /src is mounted read-only, /out is a fresh writable mount whose
    # content becomes its own result, /tmp is scratch space that is thrown away
    pack = base.sh(
        PACK,
        mounts=[
            llb.bind("/src", sources, selector="/src", readonly=True),
            llb.bind("/out", llb.scratch()),
            llb.tmpfs("/tmp", size=64 << 20),
        ],
        custom_name="pack site",
    )
    artifacts = pack.get_mount("/out")

    # final stage: only the artifacts, on an empty filesystem
    return llb.scratch().file(
        llb.mkdir("/dist", 0o755)
        .copy(artifacts, "/", "/dist/", dir_contents_only=True)
        .mkfile("/dist/README", 0o644, "site.tar.gz: the generated site; check with SHA256SUMS\n"),
        custom_name="collect artifacts",
    )


if __name__ == "__main__":
    sys.exit(run(build, __doc__))
