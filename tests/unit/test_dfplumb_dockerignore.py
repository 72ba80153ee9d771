"""`.dockerignore` reading (moby ignorefile.ReadAll rules) and Go's path.Clean."""

from __future__ import annotations

import pytest

from bkcore.frontends.dockerfile.dockerignore import go_clean, read_patterns


@pytest.mark.parametrize(
    ("path", "clean"),
    [
        ("", "."),
        (".", "."),
        ("a/./b/", "a/b"),
        ("a//b", "a/b"),
        ("/a/../../b", "/b"),
        ("../a", "../a"),
        ("a/../..", ".."),
        ("//x", "/x"),
        ("/", "/"),
    ],
)
def test_go_clean(path: str, clean: str) -> None:
    assert go_clean(path) == clean


def test_comments_blank_lines_trimming_and_leading_slash() -> None:
    data = "\ufeff# a comment\n\n   \n  /docs/*.md  \nbuild/\n./a/../b\r\n# !not-a-negation\n/\n"
    assert read_patterns(data.encode()) == ["docs/*.md", "build", "b", "/"]


def test_negations_keep_their_bang_and_are_cleaned() -> None:
    assert read_patterns("*\n! /keep/./me \n!\n") == ["*", "!keep/me", "!"]


def test_hash_only_starts_a_comment_at_the_line_start() -> None:
    assert read_patterns("a#b\n  #c\n") == ["a#b"]


def test_bom_only_stripped_on_the_first_line() -> None:
    assert read_patterns("x\n\ufeffy\n") == ["x", "\ufeffy"]


def test_other_unicode_separators_do_not_split_lines() -> None:
    # Go's bufio.ScanLines splits on \n only.
    assert read_patterns("a\x0bb\n") == ["a\x0bb"]
