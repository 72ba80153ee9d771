"""Shell-word lexer of the Dockerfile frontend (BuildKit v0.11 shell lexer semantics)."""

from __future__ import annotations

import pytest

from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile.shell import Lexer, ShellError, build_envs, go_quote

ENV = {"A": "a", "B": "b", "EMPTY": "", "SP": "x  y", "PWD": "/home", "KO": "한국어"}

WORD_CASES = [
    # plain text, quotes
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ("'a b'", "a b"),
    ('"a b"', "a b"),
    ('"hel\'lo"', "hel'lo"),
    ("'say \"hi\"'", 'say "hi"'),
    ("\"''\"", "''"),
    # escapes outside quotes: escape any char, dropped at the end
    ("a\\ b", "a b"),
    ("abc\\tdef", "abctdef"),
    ("he\\'llo", "he'llo"),
    ("hello\\", "hello"),
    ("hello\\\\", "hello\\"),
    ("he\\$PWD", "he$PWD"),
    ("he\\\\$PWD", "he\\/home"),
    # escapes inside double quotes: only " $ and the escape itself
    ('"abc\\tdef"', "abc\\tdef"),
    ('"abc\\\\tdef"', "abc\\tdef"),
    ('"a\\"b"', 'a"b'),
    ('"a\\$A"', "a$A"),
    ('"a\\\\$A"', "a\\a"),
    # single quotes keep everything
    ("'abc\\tdef'", "abc\\tdef"),
    ("'hello\\'", "hello\\"),
    ("'$A ${B}'", "$A ${B}"),
    # variables
    ("$A", "a"),
    ("${A}", "a"),
    ("$A$B", "ab"),
    ("${A}b", "ab"),
    ("$Ab", ""),
    ("x${UNSET}y", "xy"),
    ('"$A $B"', "a b"),
    ("$KO!", "한국어!"),
    ("$", "$"),
    ("a$", "a$"),
    ("$.", "$."),
    ("he$.x", "he$.x"),
    ("he$1x", "hex"),
    ("$@x", "x"),
    # ${a:-b} / ${a-b}: default when empty-or-unset / unset only
    ("${UNSET:-def}", "def"),
    ("${EMPTY:-def}", "def"),
    ("${A:-def}", "a"),
    ("${UNSET-def}", "def"),
    ("${EMPTY-def}", ""),
    ("${A-def}", "a"),
    # ${a:+b} / ${a+b}: alternative when set-and-non-empty / set
    ("${UNSET:+alt}", ""),
    ("${EMPTY:+alt}", ""),
    ("${A:+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${A+alt}", "alt"),
    # the word of a modifier is processed recursively
    ("${A:-$UNSET}", "a"),
    ("${UNSET:-${A}x}", "ax"),
    ("${UNSET:-${ALSO:-deep}}", "deep"),
    ("${UNSET:-'q  w'}", "q  w"),
    ('${UNSET:-"$B b"}', "b b"),
    ("${A:+${B}${B}}", "bb"),
    # ${a?msg} passes set values through
    ("${A?}", "a"),
    ("${EMPTY?msg}", ""),
    ("${A:?msg}", "a"),
]


@pytest.mark.parametrize(("word", "expected"), WORD_CASES)
def test_process_word(word: str, expected: str) -> None:
    assert Lexer("\\").process_word(word, ENV) == expected


ERROR_CASES = [
    ("he'llo", "unexpected end of statement while looking for matching single-quote"),
    ('"hello', "unexpected end of statement while looking for matching double-quote"),
    ('"hello\\"', "unexpected end of statement while looking for matching double-quote"),
    ("he\\\\'llo", "single-quote"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${UNSET?custom $A}", "UNSET: custom a"),
    ("${UNSET:?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${EMPTY:?gone}", "EMPTY: gone"),
    ("${A:=x}", "unsupported modifier (=) in substitution"),
    ("${A:#x}", "unsupported modifier (#) in substitution"),
    ("${A#x}", "missing ':' in substitution"),
    ("${A%x}", "missing ':' in substitution"),
    ("${A/x/y}", "missing ':' in substitution"),
    ("${A", "missing ':' in substitution"),
    ("${}", "syntax error: bad substitution"),
    ("${:}", "syntax error: bad substitution"),
    ("${{A}", "syntax error: bad substitution"),
    ("${", "syntax error: missing '}'"),
    ("${A:-x", "syntax error: missing '}'"),
    ("${A-x", "syntax error: missing '}'"),
]


@pytest.mark.parametrize(("word", "message"), ERROR_CASES)
def test_process_word_errors(word: str, message: str) -> None:
    with pytest.raises(ShellError) as info:
        Lexer("\\").process_word(word, ENV)
    assert message in str(info.value)
    assert isinstance(info.value, FrontendError)


def test_error_names_the_word_like_buildkit() -> None:
    with pytest.raises(ShellError) as info:
        Lexer().process_word('x "${NOPE:?must be set}"', {})
    assert str(info.value) == 'failed to process "x \\"${NOPE:?must be set}\\"": NOPE: must be set'


def test_backtick_escape_token() -> None:
    lex = Lexer("`")
    assert lex.process_word("a`$A", ENV) == "a$A"
    assert lex.process_word("C:\\dir\\$A", ENV) == "C:\\dir\\a"
    assert lex.process_word('"q`"x"', ENV) == 'q"x'
    assert lex.process_word("a` b", ENV) == "a b"


WORDS_CASES = [
    ("a b  c", ["a", "b", "c"]),
    ("  lead trail  ", ["lead", "trail"]),
    ("a$SP", ["ax", "y"]),
    ('a"$SP"', ["ax  y"]),
    ("'a b' c", ["a b", "c"]),
    ('"" a', ["a"]),
    ("a\\ b c", ["a b", "c"]),
    ("${UNSET:-x y}z", ["x", "yz"]),
    # like BuildKit, the result of a ${...} is split even when its word was quoted
    ('${UNSET:-"x y"}z', ["x", "yz"]),
    ("$EMPTY", []),
    ("8080/tcp 9090", ["8080/tcp", "9090"]),
]


@pytest.mark.parametrize(("word", "expected"), WORDS_CASES)
def test_process_words_splits_after_expansion(word: str, expected: list[str]) -> None:
    assert Lexer().process_words(word, ENV) == expected


def test_process_word_keeps_inner_whitespace() -> None:
    assert Lexer().process_word("a  $SP  b", ENV) == "a  x  y  b"


def test_matches_name_only_variables_that_were_found() -> None:
    word, used = Lexer().process_word_with_matches(
        "${A} $UNSET ${B:-x} ${C+y} '$PWD'", {"A": "1", "B": "2", "C": ""}
    )
    assert word == "1  2 y $PWD"
    assert used == {"A", "B", "C"}
    assert Lexer().process_word_with_matches("plain", {"A": "1"}) == ("plain", set())


def test_skip_unset_env_keeps_references_as_written() -> None:
    lex = Lexer(skip_unset_env=True)
    src = "$UNSET ${UNSET} ${UNSET:-x} ${UNSET+y} ${UNSET?z} $A"
    assert lex.process_word(src, ENV) == "$UNSET ${UNSET} ${UNSET:-x} ${UNSET+y} ${UNSET?z} a"
    # set-but-empty values are still errors for :?
    with pytest.raises(ShellError, match="EMPTY: is not allowed to be empty"):
        lex.process_word("${EMPTY:?}", ENV)


def test_raw_quotes_and_raw_escapes() -> None:
    lex = Lexer(raw_quotes=True)
    assert lex.process_word("'a b' \"$A\"", ENV) == "'a b' \"a\""
    raw = Lexer(raw_quotes=True, raw_escapes=True)
    assert raw.process_word('a\\ b "c\\"d"', ENV) == 'a\\ b "c\\"d"'


def test_skip_process_quotes_treats_quotes_as_text() -> None:
    lex = Lexer(skip_process_quotes=True)
    assert lex.process_word("'$A' \"$B\"", ENV) == "'a' \"b\""


def test_build_envs_and_go_quote() -> None:
    assert build_envs(["A=1", "B", "C=x=y", "A=2"]) == {"A": "2", "B": "", "C": "x=y"}
    assert go_quote('a"b\\c\n\t\x01') == '"a\\"b\\\\c\\n\\t\\x01"'


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    deep = "${A:-" * 150 + "x" + "}" * 150
    with pytest.raises(ShellError, match="nested too deeply"):
        Lexer().process_word(deep, {})
    fine = "${U:-" * 50 + "x" + "}" * 50
    assert Lexer().process_word(fine, {}) == "x"


def test_word_splitting_of_mixed_chunks() -> None:
    lex = Lexer()
    assert lex.process_words("ab cd  ef", {}) == ["ab", "cd", "ef"]
    assert lex.process_words('"" x', {}) == ["x"]
    assert lex.process_words("x$SP$SP", ENV) == ["xx", "yx", "y"]
    assert lex.process_words("a\u00a0b\u3000c", {}) == ["a", "b", "c"]
    long_word = "a" * 200_000
    assert lex.process_words(long_word + " b", {}) == [long_word, "b"]
