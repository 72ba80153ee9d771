"""Command strings split like the Go client's llb.Shlex (google/shlex)."""

from __future__ import annotations

import pytest

from bkcore.errors import DefinitionError
from bkcore.llb.shellwords import split


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a  b\tc\n", ["a", "b", "c"]),
        ("sh -c 'echo \"x\" > /y'", ["sh", "-c", 'echo "x" > /y']),
        ('say "a \\" b" "" end', ["say", 'a " b', "", "end"]),
        ('"\\$HOME"', ["$HOME"]),  # backslash escapes any character inside double quotes
        ("a\\ b c", ["a b", "c"]),
        ("'a'b' c'", ["ab c"]),
        ("x#y # comment\nz", ["x#y", "z"]),
        ("# nothing", []),
        ("", []),
        ("$VAR ${X} *", ["$VAR", "${X}", "*"]),  # no expansion
    ],
)
def test_split(text: str, words: list[str]) -> None:
    assert split(text) == words


@pytest.mark.parametrize("text", ["'open", '"open', '"esc\\', "trailing\\"])
def test_errors(text: str) -> None:
    with pytest.raises(DefinitionError):
        split(text)
