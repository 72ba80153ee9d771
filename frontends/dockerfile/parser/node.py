"""The Dockerfile syntax tree (BuildKit's ``parser.Node``), heredocs, warnings and errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from bkcore.errors import FrontendError

__all__ = ["Heredoc", "Node", "ParseError", "ParseResult", "ParseWarning"]


class ParseError(FrontendError):
    """The Dockerfile cannot be parsed.

    ``message`` is BuildKit's text of the error; ``line`` (1-based, 0 when unknown) and
    ``end_line`` locate it. ``str()`` is ``FILENAME:LINE: message`` when a filename was given,
    else the message alone.
    """

    def __init__(self, message: str, line: int = 0, end_line: int = 0, filename: str = "") -> None:
        self.message = message
        self.end_line = max(end_line, line)
        super().__init__(message, filename, line)

    def with_filename(self, filename: str) -> ParseError:
        """The same error naming ``filename`` (for ``Dockerfile:LINE: message``)."""
        return ParseError(self.message, self.line, self.end_line, filename)


@dataclass(slots=True)
class Heredoc:
    """A heredoc attached to an instruction (``<<EOF``)."""

    name: str
    content: str = ""
    expand: bool = True
    chomp: bool = False
    file_descriptor: int = 0


@dataclass(slots=True)
class Node:
    """One node of the syntax tree.

    The root has ``children`` (one per instruction). An instruction node has ``value`` = the
    lower-cased keyword (``keyword`` keeps the spelling as written), ``flags`` (``--x=y`` words
    as written), ``original`` (the instruction text, continuations joined), ``attributes``
    (``{"json": True}`` for the JSON form), ``heredocs``, ``start_line``/``end_line``
    (1-based) and ``prev_comment`` (comment lines directly above it). Its arguments are the
    chain ``next``, ``next.next``... whose ``value`` is one argument each; ONBUILD's single
    ``next`` node holds the trigger instruction in ``children``.
    """

    value: str = ""
    next: Node | None = None
    children: list[Node] = field(default_factory=list)
    heredocs: list[Heredoc] = field(default_factory=list)
    attributes: dict[str, bool] = field(default_factory=dict)
    original: str = ""
    flags: list[str] = field(default_factory=list)
    start_line: int = 0
    end_line: int = 0
    prev_comment: list[str] = field(default_factory=list)
    keyword: str = ""

    def args(self) -> list[str]:
        """Values of the ``next`` chain; an ONBUILD trigger contributes its keyword and args."""
        out: list[str] = []
        node = self
        while node.next is not None:
            arg = node.next
            if not arg.children:
                out.append(arg.value)
            elif len(arg.children) == 1:
                sub = arg.children[0]
                out.append(sub.keyword or sub.value)
                out.extend(sub.args())
            node = arg
        return out

    def dump(self) -> str:
        """S-expression form of the tree, as BuildKit's ``Node.Dump`` prints it."""
        from bkcore.frontends.dockerfile.shell import go_quote

        text = self.value.lower()
        if self.flags:
            text += " [" + " ".join(go_quote(f) for f in self.flags) + "]"
        for child in self.children:
            text += "(" + child.dump() + ")\n"
        node = self.next
        while node is not None:
            if node.children:
                text += " " + node.dump()
            else:
                text += " " + go_quote(node.value)
            node = node.next
        return text.strip()


@dataclass(frozen=True)
class ParseWarning:
    """A warning found while parsing: ``message`` at ``line`` (1-based)."""

    message: str
    line: int
    detail: str = ""
    url: str = ""


@dataclass
class ParseResult:
    """What :func:`parse` returns.

    ``warnings`` are the warnings as ``"line N: message"`` strings; ``warning_items`` carries
    the same warnings as :class:`ParseWarning` (message and line apart). ``directives`` maps
    the parser directives found (``syntax``, ``escape``, ``check``) to their values.
    """

    ast: Node
    warnings: list[str]
    escape: str
    directives: dict[str, str]
    warning_items: list[ParseWarning] = field(default_factory=list)
