"""``.dockerignore`` files: the exclude patterns they give, as moby's ``ignorefile.ReadAll``.

Each line is trimmed (a UTF-8 BOM on the first line is dropped); empty lines and lines that
start with ``#`` are skipped; a leading ``!`` (re-include) is kept while the rest of the
pattern is cleaned like Go's ``filepath.Clean`` and loses a leading ``/`` (patterns are always
relative to the context root). Matching is :mod:`bkcore.fs.patterns`' job (the local source
applies ``local.excludepatterns``).
"""

from __future__ import annotations

__all__ = ["DOCKERIGNORE", "go_clean", "read_patterns"]

#: The ignore file read from the root of the build context.
DOCKERIGNORE = ".dockerignore"

_BOM = "\ufeff"


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: the shortest equivalent path (``""`` -> ``"."``)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    cleaned = "/".join(out)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def read_patterns(data: bytes | str) -> list[str]:
    """The exclude patterns of an ignore file's content, in file order."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    patterns: list[str] = []
    for number, raw in enumerate(text.split("\n")):
        line = raw.removeprefix(_BOM) if number == 0 else raw
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns
