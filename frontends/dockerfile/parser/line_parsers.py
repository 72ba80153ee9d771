"""Per-instruction argument parsers: turn the text after the keyword into a ``next`` chain.

Each parser gets the argument text (flags already removed) and the escape token and returns
``(first argument node or None, attributes)``. The rules are BuildKit's: JSON-or-shell forms,
whitespace lists, ``key=value`` lists with the legacy ``KEY name value`` form, ARG names,
HEALTHCHECK's type word, ONBUILD's nested instruction. Quotes are kept here; they are
removed later when the words are expanded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from bkcore.frontends.dockerfile.parser.node import Node
from bkcore.frontends.dockerfile.shell import GO_SPACES

__all__ = [
    "GO_SPACES",
    "SPACES",
    "NotStringArrayError",
    "extract_builder_flags",
    "is_space",
    "parse_words",
    "split_command",
]

RE_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
SPACES = frozenset(GO_SPACES)
# runs of characters without special meaning (fast paths of the word scanners)
_FLAG_PLAIN = re.compile("[^" + re.escape(GO_SPACES + "'\"\\") + "]+")
_WORD_PLAIN = re.compile("[^" + re.escape(GO_SPACES + "'\"\\") + "]+")
_WORD_PLAIN_ESC = re.compile("[^" + re.escape(GO_SPACES + "'\"`") + "]+")


def is_space(ch: str) -> bool:
    """Go's ``unicode.IsSpace``."""
    return ch in SPACES


def go_trim_space(s: str) -> str:
    """Go's ``strings.TrimSpace``."""
    return s.strip(GO_SPACES)


def go_trim_left_space(s: str) -> str:
    return s.lstrip(GO_SPACES)


class LineParseError(Exception):
    """An instruction's arguments cannot be parsed (the parser adds the line)."""


class NotStringArrayError(LineParseError):
    def __init__(self) -> None:
        super().__init__("when using JSON array syntax, arrays must be comprised of strings only")


Parsed = tuple[Node | None, dict[str, bool]]
LineParser = Callable[[str, str], Parsed]


def split_command(line: str) -> tuple[str, list[str], str]:
    """``(keyword, flags, rest)`` of an instruction line."""
    parts = RE_WHITESPACE.split(go_trim_space(line), maxsplit=1)
    flags: list[str] = []
    args = ""
    if len(parts) == 2:
        args, flags = extract_builder_flags(parts[1])
    return parts[0], flags, go_trim_space(args)


def extract_builder_flags(line: str) -> tuple[str, list[str]]:
    """Leading ``--name[=value]`` words of ``line`` (quotes and ``\\`` processed) and the rest.

    A word ``--`` ends the flags. Flags are recognised only at the start of the arguments.
    """
    words: list[str] = []
    n = len(line)
    pos = 0
    while True:
        while pos < n and line[pos] in SPACES:
            pos += 1
        if pos == n:
            return "", words
        if not line.startswith("--", pos):
            return line[pos:], words
        word: list[str] = []
        blank_ok = False
        quote = ""
        while pos < n:
            if not quote:
                plain = _FLAG_PLAIN.match(line, pos)
                if plain is not None and plain.end() > pos:
                    word.append(plain.group())
                    pos = plain.end()
                    continue
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                    pos += 1
                    continue
                if ch == "\\":
                    if pos + 1 == n:
                        quote = ""
                        pos += 1
                        continue
                    pos += 1
                    ch = line[pos]
                word.append(ch)
                pos += 1
                continue
            if ch in SPACES:
                break
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
        text = "".join(word)
        if pos == n:
            if text != "--" and (blank_ok or text):
                words.append(text)
            return "", words
        if text == "--":
            return line[pos:], words
        if blank_ok or text:
            words.append(text)


def parse_words(rest: str, escape: str) -> list[str]:
    """Whitespace-separated words; quotes and escapes are kept but group the text."""
    words: list[str] = []
    word: list[str] = []
    n = len(rest)
    pos = 0
    plain_re = _WORD_PLAIN_ESC if escape == "`" else _WORD_PLAIN
    in_word = False
    quote = ""
    blank_ok = False
    while pos < n:
        ch = rest[pos]
        if not in_word:
            if ch in SPACES:
                pos += 1
                continue
            in_word = True
        if not quote:
            plain = plain_re.match(rest, pos)
            if plain is not None and plain.end() > pos:
                word.append(plain.group())
                pos = plain.end()
                continue
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if pos + 1 == n:
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        if ch in SPACES:
            if blank_ok or word:
                words.append("".join(word))
            word = []
            blank_ok = False
            in_word = False
            pos += 1
            continue
        if ch in ("'", '"'):
            quote = ch
            blank_ok = True
        if ch == escape:
            if pos + 1 == n:
                pos += 1
                continue
            word.append(ch)
            pos += 1
            ch = rest[pos]
        word.append(ch)
        pos += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def _chain(values: list[str]) -> Node | None:
    first: Node | None = None
    prev: Node | None = None
    for value in values:
        node = Node(value=value)
        if prev is None:
            first = node
        else:
            prev.next = node
        prev = node
    return first


def parse_ignore(rest: str, escape: str) -> Parsed:
    return Node(), {}


def _parse_name_val(rest: str, key: str, escape: str) -> Node | None:
    words = parse_words(rest, escape)
    if not words:
        return None
    if "=" not in words[0]:
        # legacy form: KEY name value words...
        parts = RE_WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise LineParseError(f"{key} must have two arguments")
        return Node(value=parts[0], next=Node(value=parts[1]))
    values: list[str] = []
    for word in words:
        if "=" not in word:
            raise LineParseError(
                f"Syntax error - can't find = in {_go_quote(word)}. Must be of the form: name=value"
            )
        name, _, value = word.partition("=")
        values += (name, value)
    return _chain(values)


def _go_quote(s: str) -> str:
    from bkcore.frontends.dockerfile.shell import go_quote

    return go_quote(s)


def parse_env(rest: str, escape: str) -> Parsed:
    return _parse_name_val(rest, "ENV", escape), {}


def parse_label(rest: str, escape: str) -> Parsed:
    return _parse_name_val(rest, "LABEL", escape), {}


def parse_name_or_name_val(rest: str, escape: str) -> Parsed:
    return _chain(parse_words(rest, escape)), {}


def parse_strings_whitespace_delimited(rest: str, escape: str) -> Parsed:
    if not rest:
        return None, {}
    return _chain(RE_WHITESPACE.split(rest)), {}


def parse_string(rest: str, escape: str) -> Parsed:
    if not rest:
        return None, {}
    return Node(value=rest), {}


def _no_constants(name: str) -> Any:
    raise ValueError(name)


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def parse_json(rest: str) -> Parsed | None:
    """The JSON-array form, or None when ``rest`` is not a JSON array.

    Like Go's ``json.Decoder`` the first JSON value is used and text after it is ignored.
    """
    rest = go_trim_left_space(rest)
    if not rest.startswith("["):
        return None
    try:
        value, _ = _DECODER.raw_decode(rest)
    except (ValueError, RecursionError):  # Go's decoder also gives up on very deep nesting
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise NotStringArrayError()
    return _chain(value), {"json": True}


def parse_maybe_json(rest: str, escape: str) -> Parsed:
    if not rest:
        return None, {}
    parsed = parse_json(rest)
    if parsed is not None:
        return parsed
    return Node(value=rest), {}


def parse_maybe_json_to_list(rest: str, escape: str) -> Parsed:
    parsed = parse_json(rest)
    if parsed is not None:
        return parsed
    return parse_strings_whitespace_delimited(rest, escape)


def parse_health_config(rest: str, escape: str) -> Parsed:
    sep = 0
    while sep < len(rest) and rest[sep] not in SPACES:
        sep += 1
    if sep == 0:
        return None, {}
    nxt = sep
    while nxt < len(rest) and rest[nxt] in SPACES:
        nxt += 1
    cmd, attrs = parse_maybe_json(rest[nxt:], escape)
    return Node(value=rest[:sep], next=cmd), attrs
