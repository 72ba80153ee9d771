"""What the example scripts share: the base filesystem they build on and writing the LLB.

``BKCORE_BASE`` chooses the base:

* ``local`` or ``local:NAME``: the directory the client sends as local source ``NAME``
  (default ``base``), e.g. a rootfs made by ``scripts/make-rootfs DIR`` and passed with
  ``bkcore build --local base=DIR``; no registry needed. It is copied onto scratch so that
  the steps on it are cached by its content;
* ``image:REF``: the image ``REF``;
* unset or ``image``: the image in ``BKCORE_BASE_IMAGE`` (default
  ``127.0.0.1:5000/busybox:latest``, the test registry).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from bkcore import llb

DEFAULT_IMAGE = "127.0.0.1:5000/busybox:latest"
DEFAULT_LOCAL = "base"


def base_fs() -> llb.State:
    """The base filesystem selected by ``BKCORE_BASE`` (see the module docstring)."""
    spec = os.environ.get("BKCORE_BASE", "")
    kind, _, arg = spec.partition(":")
    if kind == "local":
        name = arg or DEFAULT_LOCAL
        rootfs = llb.local(name, shared_key_hint=name, custom_name=f"load base rootfs {name!r}")
        # A local source's cache key is random per session, and ops that change their input
        # (mkdir, a run's rootfs) are keyed by that key, as in BuildKit: built directly on
        # the local source, nothing would be cached across builds. A copy is keyed by the
        # content it copies, so everything built on it is.
        return llb.scratch().file(
            llb.copy(rootfs, "/", "/", dir_contents_only=True), custom_name="base rootfs"
        )
    if kind in ("", "image"):
        return llb.image(arg or os.environ.get("BKCORE_BASE_IMAGE", DEFAULT_IMAGE))
    raise SystemExit(f"BKCORE_BASE={spec!r}: expected local[:NAME] or image[:REF]")


def run(build: Callable[[], llb.State], doc: str | None) -> int:
    """Parse ``--platform``, build the graph and write its Definition to stdout."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--platform", default=os.environ.get("BKCORE_PLATFORM"))
    args = parser.parse_args()
    if sys.stdout.isatty():
        print("refusing to write binary LLB to a terminal; pipe it", file=sys.stderr)
        return 2
    build().marshal(platform=args.platform).write(sys.stdout.buffer)
    return 0
