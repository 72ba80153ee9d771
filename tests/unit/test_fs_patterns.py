"""bkcore.fs.patterns: .dockerignore / fsutil include and exclude semantics.

The three tree cases are the contexts and results recorded from BuildKit v0.11.6 in the
conformance suite (cases 040, 041, 042).
"""

from __future__ import annotations

import pytest

from bkcore.fs.errors import FileOpError
from bkcore.fs.patterns import PathMatcher


def walk_select(tree: list[str], matcher: PathMatcher) -> set[str]:
    """What a pruned walk keeps: matching entries plus the parents of kept entries.

    *tree* lists every path (a trailing ``/`` marks a directory, for readability).
    """
    paths = sorted(p.rstrip("/") for p in tree)
    kept: set[str] = set()
    for path in paths:
        parts = path.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if not all(matcher.may_descend(p) for p in parents):
            continue
        if matcher.matches(path):
            kept.add(path)
            kept.update(parents)
    return kept


CASE_040 = [
    ".dockerignore", "Dockerfile", "README.md", "credentials.txt", "deep/", "deep/a/",
    "deep/a/b/", "deep/a/b/c.tmp", "docs/", "docs/README.md", "keep/", "keep/a.tmp",
    "keep/kept.txt", "logs/", "logs/app.log", "logs/deep/", "logs/deep/other.log",
    "logs/deep/retain.log", "logs/retain.log", "notes.txt", "sub/", "sub/credentials.txt",
]  # fmt: skip
IGNORE_040 = [
    "/credentials.txt", "logs/", "!logs/retain.log", "!logs/deep/*.log",
    "logs/deep/other.log", "**/*.tmp", "*.md", "  notes.txt  ",
]  # fmt: skip


def test_case_040_anchors_and_reinclude() -> None:
    got = walk_select(CASE_040, PathMatcher((), IGNORE_040))
    assert got == {
        ".dockerignore", "Dockerfile", "deep", "deep/a", "deep/a/b", "docs",
        "docs/README.md", "keep", "keep/kept.txt", "logs", "logs/deep",
        "logs/deep/retain.log", "logs/retain.log", "sub", "sub/credentials.txt",
    }  # fmt: skip


def test_case_041_exclude_everything_but() -> None:
    tree = [
        ".dockerignore", "Dockerfile", "keep.txt", "misc.txt", "src/", "src/lib/",
        "src/lib/y.bak", "src/lib/z.c", "src/main.c", "src/old.bak",
    ]  # fmt: skip
    ignore = ["Dockerfile", ".dockerignore", "*", "!src", "!keep.txt", "src/**/*.bak"]
    got = walk_select(tree, PathMatcher((), ignore))
    assert got == {"keep.txt", "src", "src/lib", "src/lib/z.c", "src/main.c"}


def test_case_042_double_star() -> None:
    tree = [
        ".dockerignore", "Dockerfile", "a.txt", "ab.txt", "build/", "build/out.o", "cache1/",
        "cache1/x", "cachefile", "node_modules/", "node_modules/a.js", "pkg/", "pkg/build/",
        "pkg/build/drop.o", "pkg/build/keep.me", "pkg/node_modules/", "pkg/node_modules/b.js",
        "pkg/src/", "pkg/src/c.js", "x/", "x/y/", "x/y/z.gen", "x/z.gen",
    ]  # fmt: skip
    ignore = ["**/node_modules", "**/build/**", "!**/build/keep.me", "cache*/", "?.txt",
              "*/*/*.gen"]  # fmt: skip
    got = walk_select(tree, PathMatcher((), ignore))
    assert got == {
        ".dockerignore", "Dockerfile", "ab.txt", "build", "pkg", "pkg/build",
        "pkg/build/keep.me", "pkg/src", "pkg/src/c.js", "x", "x/y", "x/z.gen",
    }  # fmt: skip


def test_exclude_prunes_walk_unless_an_exception_can_match_below() -> None:
    plain = PathMatcher((), ["docs"])
    assert not plain.may_descend("docs")
    assert not plain.matches("docs/a/b.txt")
    assert plain.may_descend("src")
    reinc = PathMatcher((), ["docs", "!docs/keep"])
    assert reinc.may_descend("docs")
    assert not reinc.may_descend("docs/other")
    assert reinc.matches("docs/keep/x")
    assert not reinc.matches("docs/other")
    top_only = PathMatcher((), ["docs", "!*.md"])
    assert not top_only.may_descend("docs")


def test_last_matching_pattern_wins() -> None:
    m = PathMatcher((), ["*.md", "!README.md", "README.md"])
    assert not m.matches("README.md")
    m2 = PathMatcher((), ["*.md", "!README*"])
    assert m2.matches("README.md")
    assert not m2.matches("CHANGES.md")


def test_includes_select_subtrees_and_prune() -> None:
    m = PathMatcher(["src/*.py", "docs"], ())
    assert m.matches("src/a.py")
    assert not m.matches("src/a.txt")
    assert not m.matches("src")
    assert m.may_descend("src")
    assert not m.may_descend("lib")
    assert not m.may_descend("src/sub")
    assert m.matches("docs/deep/x.txt")
    assert m.may_descend("docs/deep")
    deep = PathMatcher(["**/*.go"], ())
    assert deep.may_descend("a/b/c")
    assert deep.matches("a/b/c/x.go")
    assert deep.matches("x.go")


def test_includes_and_excludes_combine() -> None:
    m = PathMatcher(["src"], ["src/gen", "**/*.o"])
    assert m.matches("src/main.c")
    assert not m.matches("src/gen/x.c")
    assert not m.matches("src/a/b.o")
    assert not m.matches("README")
    assert not m.may_descend("src/gen")


def test_go_match_syntax() -> None:
    m = PathMatcher((), ["[a-c]?", "[^x]z", "lit\\*", "foo/**"])
    assert m.matches("bz") is False  # "[a-c]?" matches bz -> excluded
    assert m.matches("dz") is False  # "[^x]z"
    assert m.matches("xz") is True
    assert m.matches("lit*") is False
    assert m.matches("litx") is True
    assert m.matches("foo") is True  # foo/** needs something below foo
    assert m.matches("foo/bar") is False
    assert PathMatcher((), ["/abs/./x/../y"]).matches("abs/y") is False
    assert PathMatcher((), ["*"]).matches("") is True  # the root itself is never excluded


def test_bad_pattern_is_an_error() -> None:
    with pytest.raises(FileOpError, match="syntax error in pattern"):
        PathMatcher((), ["[abc"])
    assert PathMatcher().selects_all
    assert not PathMatcher((), ["x"]).selects_all
