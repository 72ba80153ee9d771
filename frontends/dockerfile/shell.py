"""Shell-word lexer of the Dockerfile frontend: quotes, escapes and ``$var`` expansion.

Behaviour follows BuildKit v0.11's ``frontend/dockerfile/shell`` lexer (a small subset of POSIX
sh word processing), plus the unset-only forms ``${a-b}`` and ``${a+b}`` that issue 5 asks
for (BuildKit gained them in v0.12):

- ``'...'`` keeps everything literally (no escapes inside); ``"..."`` expands ``$`` and lets
  the escape token escape only ``"``, ``$`` and itself; outside quotes the escape token
  escapes any character and is dropped at the end of the word.
- ``$name``, ``${name}``; ``${name:-word}`` / ``${name-word}`` (default when empty or unset /
  when unset), ``${name:+word}`` / ``${name+word}`` (alternative when set and non-empty /
  when set), ``${name:?msg}`` / ``${name?msg}`` (error when empty or unset / when unset).
  ``word`` is processed recursively (quotes, escapes, nested ``$``). Other modifiers
  (``#``, ``%``, ``/``) are errors as in v0.11.
- ``$`` that starts no name stays ``$``; ``$1``/``$@``-style special parameters are names that
  are never set (so they expand to nothing).
- Word splitting (:meth:`Lexer.process_words`) happens after expansion: unquoted whitespace
  coming from the text or from an expanded value separates words; quoted text never does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from bkcore.errors import FrontendError

__all__ = ["GO_SPACES", "Lexer", "ShellError", "build_envs", "go_quote"]

_EOF = ""

#: Go's unicode.IsSpace: ASCII blanks, NEL, NBSP and the other White_Space code points.
GO_SPACES = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPACES = frozenset(GO_SPACES)
_SPACE_RE = re.compile("[" + re.escape(GO_SPACES) + "]")
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
#: ``${...}`` nesting deeper than this is refused (Python's stack is finite; BuildKit's is not).
MAX_NESTING = 100
_SPECIALS: dict[tuple[str, str, bool], re.Pattern[str]] = {}


def _specials(escape: str, stop: str, quotes: bool) -> re.Pattern[str]:
    """Regex finding the next character the word processor must look at."""
    key = (escape, stop, quotes)
    pattern = _SPECIALS.get(key)
    if pattern is None:
        chars = "$" + escape + stop + ("'\"" if quotes else "")
        pattern = re.compile("[" + re.escape(chars) + "]")
        _SPECIALS[key] = pattern
    return pattern


class ShellError(FrontendError):
    """A word could not be processed (unterminated quote, bad substitution, ``${a?}``...)."""


def go_quote(s: str) -> str:
    """``s`` quoted like Go's ``%q`` (used in error messages so they read like BuildKit's)."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\a":
            out.append("\\a")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\v":
            out.append("\\v")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable() and ord(ch) > 0x7F:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def build_envs(env: Iterable[str]) -> dict[str, str]:
    """``["K=V", "K2"]`` -> ``{"K": "V", "K2": ""}`` (a later key overwrites an earlier one)."""
    out: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        out[key] = value if sep else ""
    return out


class _Words:
    """Accumulates the split words while a word is processed."""

    __slots__ = ("in_word", "word", "words")

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _SPACES:
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.word += ch
            self.in_word = True

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        """``add_char`` for each character, one regex split instead of a loop."""
        for i, part in enumerate(_SPACE_RE.split(text)):
            if i and self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
            if part:
                self.word += part
                self.in_word = True

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _ShellWord:
    """One pass over one word."""

    __slots__ = (
        "depth",
        "envs",
        "escape",
        "matches",
        "n",
        "pos",
        "raw_escapes",
        "raw_quotes",
        "skip_quotes",
        "skip_unset",
        "src",
    )

    def __init__(self, lexer: Lexer, src: str, envs: Mapping[str, str]) -> None:
        self.src = src
        self.n = len(src)
        self.pos = 0
        self.envs = envs
        self.escape = lexer.escape
        self.raw_quotes = lexer.raw_quotes
        self.raw_escapes = lexer.raw_escapes
        self.skip_quotes = lexer.skip_process_quotes
        self.skip_unset = lexer.skip_unset_env
        self.matches: set[str] = set()
        self.depth = 0

    # -- scanner -------------------------------------------------------------------------
    def peek(self) -> str:
        return self.src[self.pos] if self.pos < self.n else _EOF

    def next(self) -> str:
        if self.pos < self.n:
            ch = self.src[self.pos]
            self.pos += 1
            return ch
        return _EOF

    # -- processing ----------------------------------------------------------------------
    def process(self) -> tuple[str, list[str]]:
        try:
            return self.process_stop_on(_EOF)
        except ShellError as exc:
            raise ShellError(f"failed to process {go_quote(self.src)}: {exc}") from None

    def process_stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        escape = self.escape
        src = self.src
        n = self.n
        specials = _specials(escape, stop, not self.skip_quotes)
        while self.pos < n:
            pos = self.pos
            match = specials.search(src, pos)
            end = match.start() if match is not None else n
            if end > pos:
                chunk = src[pos:end]
                result.append(chunk)
                words.add_string(chunk)
                self.pos = end
                continue
            ch = src[pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(result), words.get_words()
            if ch == "$":
                tmp = self.process_dollar()
                result.append(tmp)
                words.add_string(tmp)
                continue
            if ch != escape:  # a quote (only searched for when quotes are processed)
                tmp = self.process_single_quote() if ch == "'" else self.process_double_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
                continue
            self.pos += 1
            if self.raw_escapes:
                words.add_raw_char(ch)
                result.append(ch)
            ch = self.next()
            if ch == _EOF:
                break
            words.add_raw_char(ch)
            result.append(ch)
        if stop:
            raise ShellError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    def process_single_quote(self) -> str:
        result: list[str] = []
        ch = self.next()
        if self.raw_quotes:
            result.append(ch)
        while True:
            ch = self.next()
            if ch == _EOF:
                raise ShellError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                if self.raw_quotes:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def process_double_quote(self) -> str:
        result: list[str] = []
        ch = self.next()
        if self.raw_quotes:
            result.append(ch)
        while True:
            nxt = self.peek()
            if nxt == _EOF:
                raise ShellError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if nxt == '"':
                ch = self.next()
                if self.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if nxt == "$":
                result.append(self.process_dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    result.append(ch)
                after = self.peek()
                if after == _EOF:
                    continue  # the escape at the end of the word is dropped
                if after in ('"', "$", self.escape):
                    ch = self.next()
            result.append(ch)

    def process_dollar(self) -> str:
        self.next()  # the '$'
        if self.peek() == "{":
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise ShellError("syntax error: substitutions nested too deeply")
            try:
                return self._process_braces()
            finally:
                self.depth -= 1
        name = self.process_name()
        if not name:
            return "$"
        value, found = self.get_env(name)
        if not found and self.skip_unset:
            return "$" + name
        return value

    def _process_braces(self) -> str:
        self.next()  # the '{'
        first = self.peek()
        if first == _EOF:
            raise ShellError("syntax error: missing '}'")
        if first in ("{", "}", ":"):
            raise ShellError("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.skip_unset:
                return "${" + name + "}"
            return value
        if ch == ":":
            modifier = self.next()
            word = self._modifier_word()
            value, found = self.get_env(name)
            if modifier not in ("-", "+", "?"):
                raise ShellError(f"unsupported modifier ({modifier}) in substitution")
            if not found and self.skip_unset:
                return "${" + name + ":" + modifier + word + "}"
            empty = value == ""
            if modifier == "-":
                return word if empty else value
            if modifier == "+":
                return "" if empty else word
            if not found:
                raise ShellError(f"{name}: {word or 'is not allowed to be unset'}")
            if empty:
                raise ShellError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in ("-", "+", "?"):
            word = self._modifier_word()
            value, found = self.get_env(name)
            if not found and self.skip_unset:
                return "${" + name + ch + word + "}"
            if ch == "-":
                return value if found else word
            if ch == "+":
                return word if found else ""
            if not found:
                raise ShellError(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        raise ShellError("missing ':' in substitution")

    def _modifier_word(self) -> str:
        try:
            word, _ = self.process_stop_on("}")
        except ShellError:
            if self.peek() == _EOF:
                raise ShellError("syntax error: missing '}'") from None
            raise
        return word

    def process_name(self) -> str:
        src = self.src
        start = self.pos
        if start >= self.n:
            return ""
        ch = src[start]
        if ch.isdecimal():
            end = start
            while end < self.n and src[end].isdecimal():
                end += 1
            self.pos = end
            return src[start:end]
        if ch in _SPECIAL_PARAMS:
            self.pos += 1
            return ch
        end = start
        while end < self.n:
            ch = src[end]
            if not (ch == "_" or ch.isalpha() or ch.isdecimal()):
                break
            end += 1
        self.pos = end
        return src[start:end]

    def get_env(self, name: str) -> tuple[str, bool]:
        value = self.envs.get(name)
        if value is None:
            return "", False
        self.matches.add(name)
        return value, True


class Lexer:
    """Processes Dockerfile words: quotes, escapes and variable expansion.

    ``escape`` is the Dockerfile's escape token (``\\`` or `````). The flags mirror BuildKit's
    lexer options: ``raw_quotes`` keeps the quote characters in the result, ``raw_escapes``
    keeps escape tokens, ``skip_process_quotes`` treats quotes as ordinary characters and
    ``skip_unset_env`` leaves references to unset variables as written.
    """

    __slots__ = ("escape", "raw_escapes", "raw_quotes", "skip_process_quotes", "skip_unset_env")

    def __init__(
        self,
        escape: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
    ) -> None:
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """``word`` with quotes removed and variables expanded (inner whitespace kept)."""
        return _ShellWord(self, word, env).process()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """``word`` expanded and split into words on unquoted whitespace."""
        return _ShellWord(self, word, env).process()[1]

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> tuple[str, set[str]]:
        """:meth:`process_word` plus the names of the variables of ``env`` it used."""
        sw = _ShellWord(self, word, env)
        result = sw.process()[0]
        return result, sw.matches
