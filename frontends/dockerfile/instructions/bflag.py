"""Instruction flags (``--name=value`` before the arguments), BuildKit's ``BFlags`` rules.

- ``--name=value`` or ``--name value``-less booleans (``--link``, ``--link=true|false``);
- a string flag needs ``=`` (``missing a value on flag: x``), a boolean with ``=`` needs a
  value; an unknown name fails with ``unknown flag: x`` plus ``(did you mean y?)`` when a
  known flag is within edit distance 2; a flag given twice fails unless it is repeatable;
- ``--`` ends the flags.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BFlags", "FlagError", "levenshtein", "suggest"]


class FlagError(Exception):
    """A flag problem (the instruction parser adds the line)."""


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute each cost 1)."""
    if a == b:
        return 0
    if not a:
        return len(b)
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _match_case(value: str, orig: str) -> str:
    if orig == orig.lower():
        return value.lower()
    if orig == orig.upper():
        return value.upper()
    return value


def suggest(message: str, value: str, options: Iterable[str], case_sensitive: bool) -> str:
    """``message`` plus `` (did you mean X?)`` when an option is close to ``value``.

    Like BuildKit's ``suggest.WrapError``: an exact match adds nothing; the closest option
    with distance < 3 wins; on a tie the first in ``options`` order (BuildKit's
    order is random; flags are offered in declaration order, so ``--chwon`` suggests
    ``chown`` as the recorded BuildKit run did).
    """
    orig = value
    if not case_sensitive:
        value = value.lower()
    best = ""
    min_dist = 3
    for opt in options:
        cmp = opt if case_sensitive else opt.lower()
        if cmp == value:
            return message
        if abs(len(cmp) - len(value)) >= min_dist:
            continue  # the distance is at least the length difference
        dist = levenshtein(value, cmp)
        if dist < min_dist:
            best = cmp if case_sensitive else _match_case(cmp, orig)
            min_dist = dist
    if not best:
        return message
    return f"{message} (did you mean {best}?)"


_BOOL, _STRING, _STRINGS = 0, 1, 2


class _Flag:
    __slots__ = ("kind", "name", "value", "values")

    def __init__(self, name: str, kind: int, value: str = "") -> None:
        self.name = name
        self.kind = kind
        self.value = value
        self.values: list[str] = []


class BFlags:
    """Declare the flags an instruction accepts, then :meth:`parse` the given ones."""

    def __init__(self, args: Iterable[str]) -> None:
        self.args = list(args)
        self._flags: dict[str, _Flag] = {}
        self._used: dict[str, _Flag] = {}

    def add_bool(self, name: str, default: bool = False) -> None:
        self._flags[name] = _Flag(name, _BOOL, "true" if default else "false")

    def add_string(self, name: str, default: str = "") -> None:
        self._flags[name] = _Flag(name, _STRING, default)

    def add_strings(self, name: str) -> None:
        self._flags[name] = _Flag(name, _STRINGS)

    def parse(self) -> None:
        for arg in self.args:
            if not arg.startswith("--"):
                raise FlagError(f"arg should start with -- : {arg}")
            if arg == "--":
                return
            name, eq, value = arg[2:].partition("=")
            flag = self._flags.get(name)
            if flag is None:
                raise FlagError(suggest(f"unknown flag: {name}", name, self._flags, True))
            if name in self._used and flag.kind != _STRINGS:
                raise FlagError(f"duplicate flag specified: {name}")
            self._used[name] = flag
            if flag.kind == _BOOL:
                if eq and value == "":
                    raise FlagError(f"missing a value on flag: {name}")
                lower = value.lower()
                if lower == "":
                    flag.value = "true"
                elif lower in ("true", "false"):
                    flag.value = lower
                else:
                    raise FlagError(f"expecting boolean value for flag {name}, not: {value}")
            elif not eq:
                raise FlagError(f"missing a value on flag: {name}")
            elif flag.kind == _STRING:
                flag.value = value
            else:
                flag.values.append(value)

    def string(self, name: str) -> str:
        return self._flags[name].value

    def bool(self, name: str) -> bool:
        return self._flags[name].value == "true"

    def strings(self, name: str) -> list[str]:
        return list(self._flags[name].values)

    def used(self) -> list[str]:
        return sorted(self._used)
