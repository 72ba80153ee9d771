"""Include and exclude patterns with the semantics of .dockerignore and fsutil.

Syntax is Go ``filepath.Match`` plus ``**`` (any number of directories, also none). A
pattern is cleaned and its leading ``/`` dropped; in excludes a leading ``!`` re-includes
what earlier patterns excluded (the last matching pattern wins). A pattern that matches a
directory also matches everything below it. Paths given to :class:`PathMatcher` are
relative to the walked root (``a/b``; a leading ``/`` or ``./`` is ignored).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bkcore.fs.gomatch import compile_pattern


def _clean(path: str) -> str:
    cleaned = posixpath.normpath("/" + path.lstrip("/")).lstrip("/")
    return cleaned


@dataclass(frozen=True)
class _Pattern:
    text: str
    negated: bool
    regex: re.Pattern[str]
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, raw: str, *, allow_negation: bool) -> _Pattern | None:
        text = raw.strip()
        negated = False
        if allow_negation and text.startswith("!"):
            negated = True
            text = text[1:].strip()
        text = _clean(text)
        if not text:
            return None
        return cls(text, negated, compile_pattern(text, double_star=True), tuple(text.split("/")))

    def match(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None

    def match_or_parent(self, path: str) -> bool:
        if self.match(path):
            return True
        parts = path.split("/")
        return any(self.match("/".join(parts[:i])) for i in range(1, len(parts)))

    def may_match_below(self, reldir: str) -> bool:
        """Could this pattern match ``reldir`` itself or something below it?"""
        if not reldir:
            return True
        dparts = reldir.split("/")
        for i, dpart in enumerate(dparts):
            if i >= len(self.parts):
                # the pattern is shorter: it matches a parent of what is below, or nothing
                return self.match("/".join(dparts[:i]))
            pat = self.parts[i]
            if "**" in pat:
                return True
            if compile_pattern(pat).fullmatch(dpart) is None:
                return False
        return True


class PathMatcher:
    """Selects paths by include patterns (empty = all) minus exclude patterns."""

    def __init__(self, includes: Sequence[str] = (), excludes: Sequence[str] = ()) -> None:
        self._includes = [
            p for p in (_Pattern.parse(r, allow_negation=False) for r in includes) if p
        ]
        self._excludes = [
            p for p in (_Pattern.parse(r, allow_negation=True) for r in excludes) if p
        ]
        self._has_negation = any(p.negated for p in self._excludes)

    @property
    def selects_all(self) -> bool:
        """True when no pattern narrows the selection."""
        return not self._includes and not self._excludes

    def included(self, relpath: str) -> bool:
        """Whether *relpath* (or one of its parents) matches an include pattern."""
        path = _clean(relpath)
        if not self._includes or not path:
            return True
        return any(p.match_or_parent(path) for p in self._includes)

    def excluded(self, relpath: str) -> bool:
        """Whether the exclude patterns (with ``!`` exceptions) exclude *relpath*."""
        path = _clean(relpath)
        if not path:
            return False
        matched = False
        for pat in self._excludes:
            if pat.negated != matched:
                continue
            if pat.match_or_parent(path):
                matched = not pat.negated
        return matched

    def matches(self, relpath: str) -> bool:
        """Whether *relpath* is selected: included and not excluded."""
        return self.included(relpath) and not self.excluded(relpath)

    def may_descend(self, reldir: str) -> bool:
        """Whether anything at or below directory *reldir* can be selected (prunes walks)."""
        path = _clean(reldir)
        if not path:
            return True
        if self._includes and not any(p.may_match_below(path) for p in self._includes):
            return False
        if self.excluded(path):
            # only an exception pattern can bring back something below an excluded dir
            return self._has_negation and any(
                p.negated and p.may_match_below(path) for p in self._excludes
            )
        return True
