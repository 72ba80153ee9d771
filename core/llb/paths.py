"""Path rules of the Go client (``path.Clean``/``path.Join`` semantics, not ``os.path``)."""

from __future__ import annotations

import posixpath


def clean(p: str) -> str:
    """Go's ``path.Clean``: lexical cleanup; ``""`` -> ``"."``, ``"//a"`` -> ``"/a"``."""
    if not p:
        return "."
    out = posixpath.normpath(p)
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    return out


def join(*elems: str) -> str:
    """Go's ``path.Join``: join the non-empty elements with ``/`` and clean the result."""
    parts = [e for e in elems if e]
    if not parts:
        return ""
    return clean("/".join(parts))


def resolve(parent: str, p: str, *, keep_slash: bool = False) -> str:
    """Make ``p`` absolute against the working directory ``parent``, like the Go client.

    With ``keep_slash`` a trailing ``/`` (or ``/.``) of ``p`` survives the cleanup: a copy
    destination ``dir/`` means "into dir".
    """
    out = clean(p)
    if not posixpath.isabs(out):
        out = join("/", parent, out)
    if keep_slash:
        if p.endswith("/") and not out.endswith("/"):
            out += "/"
        elif p.endswith("/."):
            if out != "/":
                out += "/"
            out += "."
    return out


def with_dir(current: str, value: str) -> str:
    """The working directory after ``dir(value)``: relative values join the current one.

    An absolute value is kept as given (the Go client does not clean it).
    """
    if posixpath.isabs(value):
        return value
    return join(current or "/", value)
