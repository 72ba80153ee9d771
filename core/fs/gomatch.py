"""Go ``filepath.Match`` syntax translated to Python regular expressions.

``*`` matches any run of characters except ``/``, ``?`` one character except ``/``,
``[...]`` a character class (``[^...]`` negated, ranges, ``\\`` escapes) and ``\\`` escapes the
next character. With ``double_star`` a ``**`` matches across ``/`` as in .dockerignore
(``**/`` may match nothing; a trailing ``**`` matches everything).
"""

from __future__ import annotations

import functools
import re

from bkcore.fs.errors import FileOpError

_CLASS_SPECIAL = set("[]\\&~|")


def has_wildcards(component: str) -> bool:
    """True when *component* holds an unescaped ``*``, ``?`` or ``[``."""
    i = 0
    while i < len(component):
        ch = component[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def _class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the class starting after ``[`` at index *i*; return (regex, next index)."""
    out = ["["]
    if i < len(pattern) and pattern[i] == "^":
        out.append("^")
        i += 1
    start = i
    while True:
        if i >= len(pattern):
            raise FileOpError(f"syntax error in pattern {pattern!r}")
        ch = pattern[i]
        if ch == "]" and i > start:
            out.append("]")
            return "".join(out), i + 1
        if ch == "]":
            raise FileOpError(f"syntax error in pattern {pattern!r}")
        if ch == "\\":
            i += 1
            if i >= len(pattern):
                raise FileOpError(f"syntax error in pattern {pattern!r}")
            ch = pattern[i]
        if ch == "-" and i > start and i + 1 < len(pattern) and pattern[i + 1] != "]":
            out.append("-")
        else:
            out.append("\\" + ch if ch in _CLASS_SPECIAL or ch in "-^" else ch)
        i += 1


def translate(pattern: str, *, double_star: bool = False) -> str:
    """Return an anchored-free regex string equivalent to *pattern*."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if double_star and i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(?:.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            cls, i = _class(pattern, i + 1)
            out.append(cls)
            continue
        elif ch == "\\":
            i += 1
            if i >= n:
                raise FileOpError(f"syntax error in pattern {pattern!r}")
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str, *, double_star: bool = False) -> re.Pattern[str]:
    """Compile *pattern* into a regex that must match the whole name."""
    return re.compile(translate(pattern, double_star=double_star), re.DOTALL)


def match(pattern: str, name: str) -> bool:
    """Go ``filepath.Match(pattern, name)``; a malformed pattern raises FileOpError."""
    return compile_pattern(pattern).fullmatch(name) is not None
