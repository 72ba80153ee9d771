"""Dockerfile text -> syntax tree (BuildKit v0.11 ``parser.Parse`` rules).

- Parser directives (see :mod:`.directives`) set the escape token (``\\`` or `````).
- Lines are split on ``\\n`` only; a ``\\r`` before it is dropped; a UTF-8 BOM is dropped.
- Leading whitespace of an instruction line is dropped; a line whose first non-blank
  character is ``#`` is a comment, also inside a continuation (then it is skipped without
  ending the instruction). Empty lines inside a continuation are skipped with the warning
  ``Empty continuation line found in: ...``.
- The escape token as the last non-blank character of a line continues the instruction on
  the next line (it is removed, the text before it is kept as is).
- RUN, COPY and ADD (also as ONBUILD triggers) in shell form collect the heredocs their line
  names (``<<EOF``, ``<<-EOF``, ``<<"EOF"``...), reading the following lines up to each
  terminator in order.
- Unknown keywords parse (their arguments are dropped) and are rejected by
  :mod:`bkcore.frontends.dockerfile.instructions` as BuildKit does.
"""

from __future__ import annotations

import re

from bkcore.frontends.dockerfile.parser import line_parsers as lp
from bkcore.frontends.dockerfile.parser.directives import (
    KEY_ESCAPE,
    DirectiveError,
    DirectiveParser,
)
from bkcore.frontends.dockerfile.parser.node import (
    Heredoc,
    Node,
    ParseError,
    ParseResult,
    ParseWarning,
)

__all__ = [
    "DEFAULT_ESCAPE",
    "chomp_heredoc_content",
    "heredocs_from_line",
    "parse",
    "parse_heredoc",
]

DEFAULT_ESCAPE = "\\"
EMPTY_CONTINUATION_URL = "https://github.com/moby/moby/pull/33719"

_RE_HEREDOC = re.compile(r"(\d*)<<(-?)([^<]*)", re.S)
_RE_LEADING_TABS = re.compile(r"^\t+", re.M)

_HEREDOC_INSTRUCTIONS = frozenset({"add", "copy", "run"})

_DISPATCH: dict[str, lp.LineParser] = {}


class _Directives:
    """Escape token and directive parser state of one parse."""

    __slots__ = ("continuation", "escape", "found", "parser")

    def __init__(self) -> None:
        self.parser = DirectiveParser()
        self.found: dict[str, str] = {}
        self.escape = DEFAULT_ESCAPE
        self.continuation = _continuation_regex(DEFAULT_ESCAPE)

    def set_escape(self, token: str) -> None:
        if token not in ("`", "\\"):
            raise DirectiveError(f"invalid escape token '{token}' does not match ` or \\")
        self.escape = token
        self.continuation = _continuation_regex(token)

    def check_line(self, line: str) -> None:
        found = self.parser.parse_line(line)
        if found is None:
            return
        name, value = found
        self.found[name] = value
        if name == KEY_ESCAPE:
            self.set_escape(value)


def _continuation_regex(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(r"([^" + e + r"])" + e + r"[ \t]*\Z|^" + e + r"[ \t]*\Z")


def _trim_continuation(line: str, d: _Directives) -> tuple[str, bool]:
    """``(line without its continuation token, is the instruction complete)``."""
    match = d.continuation.search(line)
    if match is None:
        return line, True
    return line[: match.start()] + (match.group(1) or ""), False


def _is_comment(raw: str) -> bool:
    return lp.go_trim_left_space(raw.rstrip("\r\n")).startswith("#")


def _new_node_from_line(
    line: str, d: _Directives, comments: list[str], nested: bool = False
) -> Node:
    keyword, flags, args = lp.split_command(line)
    lower = keyword.lower()
    if lower == "onbuild":
        attrs: dict[str, bool] = {}
        if not args:
            nxt: Node | None = None
        elif nested:
            # ONBUILD ONBUILD ...: rejected by the instructions layer; no deeper nesting
            # (a line of thousands of ONBUILDs must not exhaust the stack)
            nxt = Node(value=args)
        else:
            nxt = Node(children=[_new_node_from_line(args, d, [], nested=True)])
    else:
        fn = _DISPATCH.get(lower, lp.parse_ignore)
        nxt, attrs = fn(args, d.escape)
    return Node(
        value=lower,
        keyword=keyword,
        original=line,
        flags=flags,
        next=nxt,
        attributes=attrs,
        prev_comment=list(comments),
    )


def _can_contain_heredoc(node: Node) -> bool:
    if node.value == "onbuild" and node.next is not None and node.next.children:
        node = node.next.children[0]
    return node.value in _HEREDOC_INSTRUCTIONS and not node.attributes.get("json")


def parse_heredoc(word: str) -> Heredoc | None:
    """The heredoc a word like ``<<EOF``, ``<<-"EOF"`` or ``3<<EOF`` opens, or None.

    The delimiter is the word with quotes and escapes removed; any quoting turns expansion of
    the body off (``expand=False``); ``-`` strips leading tabs (``chomp=True``).
    """
    from bkcore.frontends.dockerfile.shell import Lexer

    match = _RE_HEREDOC.fullmatch(word)
    if match is None:
        return None
    fd_text, dash, rest = match.groups()
    if not rest:
        return None
    words = Lexer("\\", skip_unset_env=True).process_words(rest, {})
    if len(words) != 1:
        return None
    raw = Lexer("\\", skip_unset_env=True, raw_quotes=True).process_words(rest, {})
    if len(raw) != len(words):
        raise lp.LineParseError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    name = words[0]
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return Heredoc(
        name=name,
        expand=quotes == raw_quotes,
        chomp=dash == "-",
        file_descriptor=int(fd_text) if fd_text else 0,
    )


def must_parse_heredoc(word: str) -> Heredoc | None:
    """:func:`parse_heredoc` that returns None instead of raising."""
    from bkcore.errors import FrontendError

    try:
        return parse_heredoc(word)
    except (lp.LineParseError, FrontendError):
        return None


def heredocs_from_line(line: str) -> list[Heredoc]:
    """The heredocs an instruction line opens, in order."""
    from bkcore.errors import FrontendError
    from bkcore.frontends.dockerfile.shell import Lexer

    if "<<" not in line:
        return []
    lexer = Lexer("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    try:
        words = lexer.process_words(line, {})
    except FrontendError:
        words = []
    docs: list[Heredoc] = []
    for word in words:
        try:
            heredoc = parse_heredoc(word)
        except FrontendError as exc:
            raise lp.LineParseError(str(exc)) from None
        if heredoc is not None:
            docs.append(heredoc)
    return docs


def chomp_heredoc_content(content: str) -> str:
    """``content`` without the leading tabs of each line (``<<-``)."""
    return _RE_LEADING_TABS.sub("", content)


def _split_lines(text: str) -> list[str]:
    """Lines with their ``\\n`` kept (like BuildKit's scanner; a last line may lack it)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _process_line(d: _Directives, raw: str, strip_left: bool, line_no: int) -> str:
    token = raw.rstrip("\r\n")
    if strip_left:
        token = lp.go_trim_left_space(token)
    try:
        d.check_line(token)
    except DirectiveError as exc:
        raise ParseError(str(exc), line_no) from None
    return "" if token.startswith("#") else token


def parse(data: bytes | str) -> ParseResult:
    """Parse a Dockerfile. Raises :class:`ParseError` (with the line) on bad input."""
    if isinstance(data, bytes):
        text = data.decode("utf-8", "replace")
    else:
        text = data
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _split_lines(text)
    total = len(lines)
    d = _Directives()
    root = Node(start_line=-1)
    items: list[ParseWarning] = []
    comments: list[str] = []
    current = 0
    idx = 0
    while idx < total:
        raw = lines[idx]
        idx += 1
        if _is_comment(raw):
            comment = raw[1:].strip()
            if comment:
                comments.append(comment)
            else:
                comments = []
        token = _process_line(d, raw, True, current + 1)
        current += 1
        start_line = current
        line, complete = _trim_continuation(token, d)
        if complete and not line:
            continue
        has_empty_continuation = False
        parts = [line]
        while not complete and idx < total:
            raw = lines[idx]
            idx += 1
            token = _process_line(d, raw, False, current + 1)
            current += 1
            if _is_comment(raw):
                continue
            if not lp.go_trim_left_space(token):
                has_empty_continuation = True
                continue
            part, complete = _trim_continuation(token, d)
            parts.append(part)
        line = "".join(parts)
        if has_empty_continuation:
            items.append(
                ParseWarning(
                    "Empty continuation line found in: " + line,
                    current,
                    "Empty continuation lines will become errors in a future release",
                    EMPTY_CONTINUATION_URL,
                )
            )
        try:
            child = _new_node_from_line(line, d, comments)
            heredocs = heredocs_from_line(line) if _can_contain_heredoc(child) else []
        except lp.LineParseError as exc:
            raise ParseError(str(exc), start_line, current) from None
        for heredoc in heredocs:
            body: list[str] = []
            terminated = False
            while idx < total:
                raw = lines[idx]
                idx += 1
                current += 1
                candidate = raw.rstrip("\r\n")
                if heredoc.chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == heredoc.name:
                    terminated = True
                    break
                body.append(raw)
            if not terminated:
                raise ParseError("unterminated heredoc", start_line, current)
            heredoc.content = "".join(body)
            child.heredocs.append(heredoc)
        child.start_line = start_line
        child.end_line = current
        if root.start_line < 0:
            root.start_line = start_line
        root.end_line = current
        root.children.append(child)
        comments = []
    if root.start_line < 0:
        raise ParseError("file with no instructions", current)
    items.extend(_lint(root))
    items.sort(key=lambda w: w.line)
    return ParseResult(
        ast=root,
        warnings=[f"line {w.line}: {w.message}" for w in items],
        escape=d.escape,
        directives=dict(d.found),
        warning_items=items,
    )


def _lint(root: Node) -> list[ParseWarning]:
    """Warnings issue 5 asks for beyond v0.11's (FROM/AS casing, JSON args for CMD/ENTRYPOINT).

    Texts are those of BuildKit's later lint rules ``FromAsCasing`` and
    ``JSONArgsRecommended``.
    """
    out: list[ParseWarning] = []
    for node in root.children:
        if node.value == "from":
            args = node.args()
            kw = node.keyword
            if len(args) >= 3 and kw in (kw.lower(), kw.upper()):
                as_word = args[1]
                want = as_word.lower() if kw == kw.lower() else as_word.upper()
                if as_word != want:
                    out.append(
                        ParseWarning(
                            f"'{as_word}' and '{kw}' keywords' casing do not match",
                            node.start_line,
                            "The 'as' keyword should match the case of the 'from' keyword",
                            "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
                        )
                    )
        elif node.value in ("cmd", "entrypoint") and node.next is not None:
            if not node.attributes.get("json"):
                name = node.value.upper()
                out.append(
                    ParseWarning(
                        f"JSON arguments recommended for {name} to prevent unintended "
                        "behavior related to OS signals",
                        node.start_line,
                        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended "
                        "behavior related to OS signals",
                        "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
                    )
                )
    return out


_DISPATCH.update(
    {
        "add": lp.parse_maybe_json_to_list,
        "arg": lp.parse_name_or_name_val,
        "cmd": lp.parse_maybe_json,
        "copy": lp.parse_maybe_json_to_list,
        "entrypoint": lp.parse_maybe_json,
        "env": lp.parse_env,
        "expose": lp.parse_strings_whitespace_delimited,
        "from": lp.parse_strings_whitespace_delimited,
        "healthcheck": lp.parse_health_config,
        "label": lp.parse_label,
        "maintainer": lp.parse_string,
        "run": lp.parse_maybe_json,
        "shell": lp.parse_maybe_json,
        "stopsignal": lp.parse_string,
        "user": lp.parse_string,
        "volume": lp.parse_maybe_json_to_list,
        "workdir": lp.parse_string,
    }
)
