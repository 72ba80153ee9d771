"""``bkcore debug dump-llb [--file F] [--dot]``: print an LLB Definition like buildctl does."""

from __future__ import annotations

import sys

from bkcore.errors import DefinitionError
from bkcore.llb.dump import dump_dot, dump_ops, go_json, load_definition

__all__ = ["run"]


def _read(file: str | None) -> tuple[bytes, str]:
    if file is None or file == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    with open(file, "rb") as fh:
        return fh.read(), file


def _write(text: str) -> None:
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    sys.stdout.flush()
    buffer.write(text.encode("utf-8"))
    buffer.flush()


def run(file: str | None, dot: bool) -> int:
    """Read a serialized Definition from ``file`` (``None`` or ``-``: stdin) and print it.

    Prints one compact JSON object per op (what ``buildctl debug dump-llb`` prints), or the
    Graphviz text with ``dot``. Returns 0, or 1 after printing one ``error: ...`` line to stderr.
    """
    try:
        data, source = _read(file)
    except OSError as exc:
        print(f"error: {exc.filename or file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        defn = load_definition(data, source)
        text = dump_dot(defn) if dot else "".join(go_json(o) + "\n" for o in dump_ops(defn))
    except DefinitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        _write(text)
    except OSError as exc:
        print(f"error: <stdout>: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
