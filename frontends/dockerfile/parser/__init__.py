"""Dockerfile parser: text -> :class:`Node` tree (BuildKit v0.11 ``frontend/dockerfile/parser``).

``parse(data)`` returns a :class:`ParseResult` (``ast``, ``warnings``, ``escape``,
``directives``) or raises :class:`ParseError` (a ``FrontendError`` with ``.line``).
"""

from bkcore.frontends.dockerfile.parser.core import (
    DEFAULT_ESCAPE,
    chomp_heredoc_content,
    heredocs_from_line,
    must_parse_heredoc,
    parse,
    parse_heredoc,
)
from bkcore.frontends.dockerfile.parser.directives import DirectiveParser, detect_syntax
from bkcore.frontends.dockerfile.parser.node import (
    Heredoc,
    Node,
    ParseError,
    ParseResult,
    ParseWarning,
)

__all__ = [
    "DEFAULT_ESCAPE",
    "DirectiveParser",
    "Heredoc",
    "Node",
    "ParseError",
    "ParseResult",
    "ParseWarning",
    "chomp_heredoc_content",
    "detect_syntax",
    "heredocs_from_line",
    "must_parse_heredoc",
    "parse",
    "parse_heredoc",
]
