#!/usr/bin/env python3
"""Build from a local directory sent by the client: copy the context into an image, write
a manifest of its files with checksums, and keep a build-cache directory between builds.

    python examples/local_source.py | bkcore debug dump-llb
    python examples/local_source.py | buildctl build --local context=. \\
        --output type=local,dest=out
    BKCORE_BASE=local python examples/local_source.py | bkcore build \\
        --local base=/tmp/rootfs --local context=. --output type=local,dest=out

The context is the local directory named "context"; *.tmp files and .git are not sent.
"""

from __future__ import annotations

import sys

from _base import base_fs, run

from bkcore import llb

MANIFEST = """\
set -e
find . -type f | sort | while read -r f; do sha256sum "$f"; done > /manifest.txt
date > /var/cache/example/last-build
wc -l < /manifest.txt > /count.txt
"""


def build() -> llb.State:
    context = llb.local(
        "context",
        exclude_patterns=["*.tmp", ".git"],
        shared_key_hint="context",
        custom_name="load build context",
    )
    app = (
        base_fs()
        .file(
            llb.copy(context, "/", "/app/", dir_contents_only=True, create_dest_path=True),
            custom_name="copy context to /app",
        )
        .with_cwd("/app")
    )
    manifest = app.sh(
        MANIFEST,
        mounts=[llb.cache("/var/cache/example", "example-cache", sharing=llb.CacheSharing.LOCKED)],
        custom_name="write manifest",
    ).root()
    return llb.scratch().file(
        llb.copy(manifest, "/manifest.txt", "/manifest.txt").copy(
            manifest, "/count.txt", "/count.txt"
        )
    )


if __name__ == "__main__":
    sys.exit(run(build, __doc__))
