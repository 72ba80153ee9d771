"""Expand wildcard source paths (``/src/*.txt``) inside a root directory.

Components are matched with Go ``filepath.Match`` one at a time, in byte order. The part
before the first wildcard component is resolved like any path (symlinks followed inside the
root); below it only real directories are entered, as a walk that does not follow links.
"""

from __future__ import annotations

import os
import posixpath
import stat

from bkcore.fs.gomatch import compile_pattern, has_wildcards
from bkcore.fs.securepath import relative, resolve


def split_wildcards(path: str) -> tuple[str, list[str]]:
    """Split a clean absolute path into its wildcard-free prefix and the rest (components)."""
    comps = [c for c in posixpath.normpath("/" + path.lstrip("/")).split("/") if c]
    for i, comp in enumerate(comps):
        if has_wildcards(comp):
            return "/" + "/".join(comps[:i]), comps[i:]
    return "/" + "/".join(comps), []


def _sorted_names(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory), key=os.fsencode)
    except (FileNotFoundError, NotADirectoryError):
        return []


def resolve_wildcards(root: str, path: str) -> list[str]:
    """In-root absolute paths matching *path*, sorted (a path without wildcards: itself)."""
    prefix, rest = split_wildcards(path)
    if not rest:
        return [prefix]
    base = resolve(root, prefix, follow_final=True)
    found: list[str] = []

    def walk(directory: str, remaining: list[str]) -> None:
        regex = compile_pattern(remaining[0])
        for name in _sorted_names(directory):
            if regex.fullmatch(name) is None:
                continue
            child = os.path.join(directory, name)
            if len(remaining) == 1:
                found.append(relative(root, child))
                continue
            try:
                st = os.lstat(child)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                walk(child, remaining[1:])

    walk(base, rest)
    return found
