"""Dockerfile parser: directives, continuations, comments, forms, flags, heredocs, errors."""

from __future__ import annotations

import pytest

from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile.parser import (
    Heredoc,
    Node,
    ParseError,
    chomp_heredoc_content,
    detect_syntax,
    parse,
    parse_heredoc,
)


def instr(text: str | bytes, index: int = -1) -> Node:
    return parse(text).ast.children[index]


# -- parser directives -------------------------------------------------------------------


def test_escape_directive_changes_continuation_token() -> None:
    res = parse("# escape=`\nFROM x\nRUN a `\n b\nRUN c\\d\n")
    assert res.escape == "`"
    assert res.directives == {"escape": "`"}
    run = res.ast.children[1]
    assert run.original == "RUN a  b"
    assert (run.start_line, run.end_line) == (3, 4)
    assert res.ast.children[2].args() == ["c\\d"]


@pytest.mark.parametrize(
    "head",
    [
        "#escape=`",
        "# escape = `",
        "  # ESCAPE=`",
        "# Escape=`   ",
        "# syntax=docker/dockerfile:1.4\n# escape=`",
        "# check=skip=all\n# escape=`",
    ],
)
def test_directive_spellings(head: str) -> None:
    assert parse(head + "\nFROM x\n").escape == "`"


def test_all_directives_are_reported() -> None:
    res = parse("# syntax = docker/dockerfile:1.4 \n# check=skip=all\n# escape=\\\nFROM x\n")
    assert res.directives == {
        "syntax": "docker/dockerfile:1.4",
        "check": "skip=all",
        "escape": "\\",
    }


@pytest.mark.parametrize(
    "text",
    [
        "FROM x\n# escape=`\nRUN a `\nRUN b\n",  # after an instruction
        "\n# escape=`\nFROM x\nRUN a `\nRUN b\n",  # after a blank line
        "# a comment\n# escape=`\nFROM x\nRUN a `\nRUN b\n",  # after a comment
        "# unknown=1\n# escape=`\nFROM x\nRUN a `\nRUN b\n",  # after an unknown directive
    ],
)
def test_directive_after_anything_else_is_a_comment(text: str) -> None:
    res = parse(text)
    assert res.escape == "\\"
    assert "escape" not in res.directives
    assert [n.value for n in res.ast.children] == ["from", "run", "run"]


def test_duplicate_directive_is_an_error() -> None:
    with pytest.raises(ParseError) as info:
        parse("# escape=`\n# Escape=\\\nFROM x\n")
    assert info.value.message == "only one escape parser directive can be used"
    assert info.value.line == 2


def test_invalid_escape_token() -> None:
    with pytest.raises(ParseError, match="invalid escape token 'x' does not match ` or"):
        parse("# escape=x\nFROM y\n")


def test_detect_syntax() -> None:
    assert detect_syntax(b"# syntax=docker/dockerfile:1.4 --x\nFROM a\n") == (
        "docker/dockerfile:1.4",
        "docker/dockerfile:1.4 --x",
        1,
    )
    assert detect_syntax("#!/usr/bin/env buildctl\n# syntax=img\nFROM a") == ("img", "img", 2)
    assert detect_syntax("// syntax=other\nFROM a") == ("other", "other", 1)
    assert detect_syntax('{"syntax": "json/img"}') == ("json/img", "json/img", 0)
    assert detect_syntax("FROM a\n# syntax=late\n") is None


# -- lines, continuations, comments ---------------------------------------------------------


def test_continuations_comments_and_line_numbers() -> None:
    text = "FROM x\nRUN a \\\n  b \\\n# inside\n  c\n\nRUN d\n"
    res = parse(text)
    run = res.ast.children[1]
    assert run.original == "RUN a   b   c"
    assert run.args() == ["a   b   c"]
    assert (run.start_line, run.end_line) == (2, 5)
    last = res.ast.children[2]
    assert (last.start_line, last.end_line) == (7, 7)
    assert (res.ast.start_line, res.ast.end_line) == (1, 7)
    assert res.warnings == []


def test_empty_continuation_line_warns() -> None:
    res = parse("FROM x\nRUN a \\\n\n   \n  b\n")
    assert res.ast.children[1].original == "RUN a   b"
    assert [(w.message, w.line) for w in res.warning_items] == [
        ("Empty continuation line found in: RUN a   b", 5)
    ]
    assert res.warnings == ["line 5: Empty continuation line found in: RUN a   b"]


def test_continuation_at_end_of_file_and_escaped_escape() -> None:
    res = parse("FROM x\nRUN echo \\\\\nRUN b \\")
    runs = res.ast.children[1:]
    # an escape preceded by an escape is not a continuation (BuildKit's rule)
    assert runs[0].original == "RUN echo \\\\"
    assert runs[1].original == "RUN b "
    assert runs[1].args() == ["b"]


def test_crlf_bom_and_indentation() -> None:
    res = parse(b"\xef\xbb\xbf  FROM x\r\n\tRUN a \\\r\n b\r\n")
    assert [n.original for n in res.ast.children] == ["FROM x", "RUN a  b"]


def test_lowercase_keywords_keep_their_spelling() -> None:
    res = parse("from x AS y\nRun echo\n")
    assert [(n.value, n.keyword) for n in res.ast.children] == [("from", "from"), ("run", "Run")]


def test_comments_above_an_instruction() -> None:
    res = parse("# one\n# two\nFROM x\n#\n# three\nRUN a\nRUN b\n")
    a, b, c = res.ast.children
    assert a.prev_comment == ["one", "two"]
    assert b.prev_comment == ["three"]  # an empty comment starts over
    assert c.prev_comment == []


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n# comments\n", "   \n\t\n", "\ufeff"])
def test_no_instructions(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert info.value.message == "file with no instructions"


# -- forms and arguments ---------------------------------------------------------------------

ARG_CASES = [
    ('CMD ["a", "b c"]', ["a", "b c"], True),
    ('CMD  [ "a" ]  ', ["a"], True),
    ("CMD [a, b]", ["[a, b]"], False),
    ("CMD ['a']", ["['a']"], False),
    ('RUN ["true"] && echo x', ["true"], True),
    ('ENTRYPOINT {"a": 1}', ['{"a": 1}'], False),
    ("CMD []", [], True),
    ("RUN echo  a   b", ["echo  a   b"], False),
    ('SHELL ["/bin/bash", "-c"]', ["/bin/bash", "-c"], True),
    ("COPY a  b\tc", ["a", "b", "c"], False),
    ('COPY ["a b", "c"]', ["a b", "c"], True),
    ('VOLUME ["/a", "/b"]', ["/a", "/b"], True),
    ("VOLUME /a /b", ["/a", "/b"], False),
    ("EXPOSE 80/tcp  443", ["80/tcp", "443"], False),
    ("FROM --platform=$P img AS base", ["img", "AS", "base"], False),
    ("ENV a=1 b=\"x y\" c='z'", ["a", "1", "b", '"x y"', "c", "'z'"], False),
    ("ENV a=x\\ y", ["a", "x\\ y"], False),
    ("ENV key  some value  words", ["key", "some value  words"], False),
    ("LABEL escaped\\ key=v", ["escaped\\ key", "v"], False),
    ("ARG a b=2 c=", ["a", "b=2", "c="], False),
    ("USER app:staff", ["app:staff"], False),
    ("WORKDIR /a b", ["/a b"], False),
    ("MAINTAINER Jane <j@x>", ["Jane <j@x>"], False),
    ("STOPSIGNAL SIGKILL", ["SIGKILL"], False),
    ('HEALTHCHECK --interval=5s CMD ["curl", "-f"]', ["CMD", "curl", "-f"], True),
    ("HEALTHCHECK CMD curl -f x", ["CMD", "curl -f x"], False),
    ("HEALTHCHECK NONE", ["NONE"], False),
    ("ONBUILD RUN echo hi", ["RUN", "echo hi"], False),
    ("ONBUILD  copy  a b", ["copy", "a", "b"], False),
]


@pytest.mark.parametrize(("line", "args", "is_json"), ARG_CASES)
def test_arguments_and_forms(line: str, args: list[str], is_json: bool) -> None:
    node = instr("FROM base\n" + line)
    assert node.args() == args
    assert bool(node.attributes.get("json")) is is_json


def test_onbuild_nests_the_trigger() -> None:
    node = instr("FROM x\nONBUILD RUN --mount=type=cache,target=/c make\n")
    assert node.value == "onbuild"
    assert node.next is not None
    trigger = node.next.children[0]
    assert trigger.value == "run"
    assert trigger.flags == ["--mount=type=cache,target=/c"]
    assert trigger.args() == ["make"]


@pytest.mark.parametrize(
    ("line", "flags", "args"),
    [
        ("COPY --from=a --chown=1:2 src dst", ["--from=a", "--chown=1:2"], ["src", "dst"]),
        ('COPY --chown="a b" x y', ["--chown=a b"], ["x", "y"]),
        ("COPY --chown='' x y", ["--chown="], ["x", "y"]),
        ("COPY --link x y", ["--link"], ["x", "y"]),
        ("COPY -- --x y", [], ["--x", "y"]),
        ("RUN echo --not-a-flag", [], ["echo --not-a-flag"]),
        (
            "RUN --network=none --mount=a --mount=b cmd",
            ["--network=none", "--mount=a", "--mount=b"],
            ["cmd"],
        ),
        ("RUN --flag-only", ["--flag-only"], []),
        ("COPY --exclude=a\\ b x y", ["--exclude=a b"], ["x", "y"]),
    ],
)
def test_flags(line: str, flags: list[str], args: list[str]) -> None:
    node = instr("FROM x\n" + line)
    assert node.flags == flags
    assert node.args() == args


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ENV a", "ENV must have two arguments"),
        ("LABEL a", "LABEL must have two arguments"),
        (
            "ENV a=1 b",
            'Syntax error - can\'t find = in "b". Must be of the form: name=value',
        ),
        (
            'CMD ["a", 1]',
            "when using JSON array syntax, arrays must be comprised of strings only",
        ),
        (
            'COPY ["a", ["b"]]',
            "when using JSON array syntax, arrays must be comprised of strings only",
        ),
    ],
)
def test_argument_errors_name_the_line(line: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse("FROM x\n\n" + line + "\n")
    assert info.value.message == message
    assert info.value.line == 3
    assert isinstance(info.value, FrontendError)


def test_unknown_instruction_parses_for_the_instruction_layer() -> None:
    node = instr("FROM x\nFOO bar baz\n")
    assert (node.value, node.keyword) == ("foo", "FOO")


# -- heredocs --------------------------------------------------------------------------------


def test_run_heredoc() -> None:
    res = parse("FROM x\nRUN <<EOF\necho hi\n# not a comment\n\nEOF\nRUN after\n")
    run = res.ast.children[1]
    assert run.heredocs == [Heredoc(name="EOF", content="echo hi\n# not a comment\n\n")]
    assert (run.start_line, run.end_line) == (2, 6)
    assert res.ast.children[2].original == "RUN after"


@pytest.mark.parametrize(
    ("word", "name", "expand", "chomp", "fd"),
    [
        ("<<EOF", "EOF", True, False, 0),
        ("<<-EOF", "EOF", True, True, 0),
        ('<<"EOF"', "EOF", False, False, 0),
        ("<<'EOF'", "EOF", False, False, 0),
        ("<<-'END'", "END", False, True, 0),
        ('<<E"O"F', "EOF", False, False, 0),
        ("3<<EOF", "EOF", True, False, 3),
    ],
)
def test_heredoc_words(word: str, name: str, expand: bool, chomp: bool, fd: int) -> None:
    assert parse_heredoc(word) == Heredoc(name=name, expand=expand, chomp=chomp, file_descriptor=fd)


@pytest.mark.parametrize("word", ["<<", "<<<EOF", "EOF", "<<a b", "x<<EOF"])
def test_not_heredoc_words(word: str) -> None:
    assert parse_heredoc(word) is None


def test_chomped_heredoc_terminator_and_content() -> None:
    run = instr("FROM x\nRUN <<-EOF\n\techo a\n\t\tb\n\tEOF\n")
    assert run.heredocs[0].content == "\techo a\n\t\tb\n"  # kept; chomped when used
    assert chomp_heredoc_content(run.heredocs[0].content) == "echo a\nb\n"


def test_several_heredocs_in_order() -> None:
    run = instr("FROM x\nRUN <<A cat - /dev/fd/3 3<<'B'\nfirst\nA\nsecond $X\nB\n")
    assert [(h.name, h.content, h.expand, h.file_descriptor) for h in run.heredocs] == [
        ("A", "first\n", True, 0),
        ("B", "second $X\n", False, 3),
    ]
    assert run.end_line == 6


def test_copy_add_and_onbuild_heredocs() -> None:
    res = parse(
        "FROM x\nCOPY <<one <<two /dst/\n1\none\n2\ntwo\n"
        "ADD <<EOF /f\nadd\nEOF\nONBUILD RUN <<EOF\nob\nEOF\n"
    )
    copy, add, onbuild = res.ast.children[1:]
    assert [h.name for h in copy.heredocs] == ["one", "two"]
    assert add.heredocs[0].content == "add\n"
    assert onbuild.heredocs[0].content == "ob\n"


def test_heredocs_only_for_run_copy_add_in_shell_form() -> None:
    res = parse('FROM x\nLABEL a=<<EOF\nRUN ["cat", "<<EOF"]\nCMD <<EOF\nEOF\n')
    assert all(not n.heredocs for n in res.ast.children)
    assert [n.value for n in res.ast.children] == ["from", "label", "run", "cmd", "eof"]


def test_unterminated_heredoc() -> None:
    with pytest.raises(ParseError) as info:
        parse("FROM x\nRUN <<EOF\necho\n")
    assert info.value.message == "unterminated heredoc"
    assert (info.value.line, info.value.end_line) == (2, 3)


# -- dump, warnings, errors --------------------------------------------------------------


def test_dump_matches_buildkit_format() -> None:
    res = parse(
        'FROM --platform=linux/amd64 img AS b\nENV A=1 B="2"\nCMD ["x", "y"]\nONBUILD RUN echo\n'
    )
    assert res.ast.dump() == (
        '(from ["--platform=linux/amd64"] "img" "AS" "b")\n'
        '(env "A" "1" "B" "\\"2\\"")\n'
        '(cmd "x" "y")\n'
        '(onbuild (run "echo"))'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM x as y\nRUN a\n", [("'as' and 'FROM' keywords' casing do not match", 1)]),
        ("from x AS y\nrun a\n", [("'AS' and 'from' keywords' casing do not match", 1)]),
        ("FROM x AS y\nFrom z as w\nfrom q as r\n", []),
        (
            'FROM x\nCMD echo hi\nENTRYPOINT ["a"]\nENTRYPOINT b\n',
            [
                (
                    "JSON arguments recommended for CMD to prevent unintended behavior "
                    "related to OS signals",
                    2,
                ),
                (
                    "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior "
                    "related to OS signals",
                    4,
                ),
            ],
        ),
    ],
)
def test_lint_warnings(text: str, expected: list[tuple[str, int]]) -> None:
    res = parse(text)
    assert [(w.message, w.line) for w in res.warning_items] == expected
    assert res.warnings == [f"line {line}: {msg}" for msg, line in expected]


def test_parse_error_text_with_filename() -> None:
    err = ParseError("unterminated heredoc", 4, 6)
    assert str(err) == "unterminated heredoc"
    named = err.with_filename("Dockerfile")
    assert str(named) == "Dockerfile:4: unterminated heredoc"
    assert (named.line, named.end_line, named.message) == (4, 6, "unterminated heredoc")


def test_thousand_line_dockerfile() -> None:
    lines = ["FROM busybox AS base"]
    for i in range(333):
        lines += [f"ENV V{i}=value{i}", f"RUN echo {i} \\", f"    && true # {i}"]
    res = parse("\n".join(lines) + "\n")
    assert len(res.ast.children) == 1 + 2 * 333
    assert res.ast.children[-1].end_line == 1000


def test_go_whitespace_rules() -> None:
    # NBSP and U+2028 are spaces for Go's unicode.IsSpace (word and argument splitting)
    node = instr("FROM x\nARG a\u00a0b\u2028c\n")
    assert node.args() == ["a", "b", "c"]
    # but only [ \t\v\f\r] split whitespace-delimited lists, as in BuildKit
    assert instr("FROM x\nEXPOSE 80\u00a0443\n").args() == ["80\u00a0443"]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    node = instr(b"FROM x\nRUN echo \xff\xfe\n")
    assert node.args() == ["echo \ufffd\ufffd"]


def test_random_input_raises_only_frontend_errors() -> None:
    """Untrusted text: whatever it is, parsing and instruction typing either succeed or raise
    a FrontendError (never another exception)."""
    import random

    from bkcore.frontends.dockerfile import instructions as ins
    from bkcore.frontends.dockerfile.shell import Lexer

    pieces = [
        *"ab =-\\`'\"$[]{}:?+#<\n\t,.",
        "FROM ",
        "RUN ",
        "COPY ",
        "ADD ",
        "ENV ",
        "ARG ",
        "LABEL ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "CMD ",
        "SHELL ",
        "--mount=",
        "type=",
        "<<EOF",
        "EOF\n",
        "${",
        "# escape=`\n",
        "\u00a0",
        "\r\n",
        "--from=",
        '["a"]',
        "VOLUME ",
        "EXPOSE ",
        "USER ",
        "WORKDIR ",
        "--interval=",
        "-",
    ]
    rng = random.Random(5)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        if rng.random() < 0.5:
            text = "FROM a\n" + text.replace("\n", "\nRUN ", 1)
        try:
            res = parse(text)
            stages, _ = ins.parse_dockerfile(res.ast)
            lexer = Lexer(res.escape)
            for stage in stages:
                for cmd in stage.commands:
                    expand = getattr(cmd, "expand", None)
                    if expand is not None:
                        expand(lambda w, lx=lexer: lx.process_word(w, {"a": "b"}))
            outcomes["ok"] += 1
        except FrontendError:
            outcomes["error"] += 1
    assert outcomes["ok"] > 100 and outcomes["error"] > 100


def test_pathological_nesting_does_not_exhaust_the_stack() -> None:
    from bkcore.frontends.dockerfile import instructions as ins

    onbuilds = parse("FROM x\n" + "ONBUILD " * 5000 + "RUN true\n")
    with pytest.raises(ParseError, match="Chaining ONBUILD"):
        ins.parse_dockerfile(onbuilds.ast)
    # arrays nested deeper than the JSON decoder goes are not JSON (shell form), like Go's
    node = instr("FROM x\nCMD " + "[" * 100_000 + "\n")
    assert node.attributes == {}
    assert node.args() == ["[" * 100_000]
