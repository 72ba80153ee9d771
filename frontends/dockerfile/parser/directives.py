"""Parser directives (`# syntax=`, `# escape=`, `# check=`) at the top of a Dockerfile.

A directive is a comment line ``# name = value`` before any instruction, blank line or other
comment; names are case-insensitive; the first line that is not a known directive ends them
(later look-alikes are plain comments); a directive given twice is an error. ``syntax`` and
``escape`` are BuildKit v0.11's; ``check`` (BuildKit >= 0.14) is recognised too so that a file
written for newer builders keeps its ``escape`` directive working.
"""

from __future__ import annotations

import json
import re

__all__ = ["DirectiveParser", "detect_syntax"]

KEY_SYNTAX = "syntax"
KEY_ESCAPE = "escape"
KEY_CHECK = "check"
VALID_DIRECTIVES = frozenset({KEY_SYNTAX, KEY_ESCAPE, KEY_CHECK})
_SP = r"[\t\n\f\r ]*"  # Go's \s (ASCII only)


class DirectiveError(Exception):
    """A duplicate directive (turned into a ParseError with the line by the parser)."""


class DirectiveParser:
    """Feeds lines one by one; returns ``(name, value)`` for each directive found."""

    __slots__ = ("done", "line", "regexp", "seen")

    def __init__(self, comment: str = "#", line: int = 0) -> None:
        self.line = line
        self.done = False
        self.seen: set[str] = set()
        self.regexp = re.compile(
            r"^"
            + re.escape(comment)
            + _SP
            + r"([a-zA-Z][a-zA-Z0-9]*)"
            + _SP
            + "="
            + _SP
            + r"(.+?)"
            + _SP
            + r"\Z"
        )

    def parse_line(self, line: str) -> tuple[str, str] | None:
        self.line += 1
        if self.done:
            return None
        match = self.regexp.match(line)
        if match is None:
            self.done = True
            return None
        key = match.group(1).lower()
        if key not in VALID_DIRECTIVES:
            self.done = True
            return None
        if key in self.seen:
            raise DirectiveError(f"only one {key} parser directive can be used")
        self.seen.add(key)
        return key, match.group(2)

    def parse_all(self, data: str) -> list[tuple[str, str, int]]:
        """Directives at the top of ``data`` as ``(name, value, line)``; stops at a duplicate."""
        out: list[tuple[str, str, int]] = []
        for line in data.split("\n"):
            if self.done:
                break
            try:
                found = self.parse_line(line.rstrip("\r"))
            except DirectiveError:
                break
            if found is not None:
                out.append((found[0], found[1], self.line))
        return out


def detect_syntax(data: bytes | str) -> tuple[str, str, int] | None:
    """The ``syntax`` directive of a Dockerfile: ``(image ref, full value, line)`` or None.

    Like BuildKit: a ``#!`` first line is skipped; ``# syntax=``, then ``// syntax=``, then a
    JSON document ``{"syntax": ...}`` are tried.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    line = 0
    first, sep, rest = text.partition("\n")
    if first.startswith("#!"):
        text = rest if sep else ""
        line = 1
    for comment in ("#", "//"):
        for name, value, at in DirectiveParser(comment, line).parse_all(text):
            if name == KEY_SYNTAX:
                return value.split(" ", 1)[0], value, at
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("syntax"), str) and doc["syntax"]:
        return doc["syntax"], doc["syntax"], line
    return None
