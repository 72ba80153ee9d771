"""FileOp cases: mkdir, mkfile, rm, copy with every option (see ../bkdiff.py for the format)."""

from __future__ import annotations

import datetime as dt
from typing import Any

T2001 = dt.datetime(2001, 2, 3, 4, 5, 6, tzinfo=dt.UTC)

CTX: dict[str, Any] = {
    "a.txt": "alpha\n",
    "b.txt": ("file", "beta\n", 0o600),
    "run.sh": ("file", "#!/bin/sh\necho hi\n", 0o755),
    "owned.txt": ("file", "owned\n", 0o640, 1000, 1000),
    "dir/one.txt": "one\n",
    "dir/two.log": "two\n",
    "dir/sub/three.txt": "three\n",
    "dir/sub/four.md": "four\n",
    "dir/sub/deep/five.txt": "five\n",
    "link-a": ("symlink", "a.txt"),
    "link-dir": ("symlink", "dir"),
    "abs-link": ("symlink", "/dir/one.txt"),
    "dangling": ("symlink", "nowhere"),
    "hl1": "hard\n",
    "hl2": ("hardlink", "hl1"),
    "empty": ("dir", 0o700),
    "arch.tar": ("tar", {"t/one": "1", "t/two": "2", "top": "top"}),
    "arch.tar.gz": ("tar", {"z/inner": "zz"}, True),
    "udir": ("dir", 0o750, 1000, 1000),
    "udir/u.txt": ("file", "u\n", 0o644, 1000, 1000),
}


def _copy(*args: Any, **kw: Any) -> Any:
    """A graph: scratch with one copy from the context ``ctx``."""

    def graph(c: Any) -> Any:
        return c.scratch().file(c.llb.copy(c.local("ctx"), *args, **kw))

    return graph


def _on_base(action: Any) -> Any:
    """A graph: ``action(c)`` applied to the busybox base, exported as diff(base, result)."""

    def graph(c: Any) -> Any:
        base = c.base()
        return c.llb.diff(base, base.file(action(c)))

    return graph


CASES: dict[str, dict[str, Any]] = {
    "copy-whole-context": {
        "graph": _copy("/", "/", dir_contents_only=True),
        "contexts": {"ctx": CTX},
        "outputs": ["local", "tar", "oci"],
    },
    "copy-root-no-contents-only": {
        "graph": _copy("/", "/out"),
        "contexts": {"ctx": CTX},
    },
    "copy-file-rename": {"graph": _copy("/a.txt", "/renamed.txt"), "contexts": {"ctx": CTX}},
    "copy-file-into-dir-slash": {
        "graph": _copy("/b.txt", "/x/y/", create_dest_path=True),
        "contexts": {"ctx": CTX},
    },
    "copy-file-missing-parent": {
        "graph": _copy("/b.txt", "/x/y/z.txt"),
        "contexts": {"ctx": CTX},
        "expect_error": "/x/y/z.txt",
        "differences": {
            "reason": "wording: BuildKit prints the daemon's snapshot path (lstat /var/lib/...:"
            " no such file or directory); bkcore names the path in the build's root"
        },
    },
    "copy-dir": {"graph": _copy("/dir", "/d"), "contexts": {"ctx": CTX}},
    "copy-dir-contents-only": {
        "graph": _copy("/dir", "/d", dir_contents_only=True, create_dest_path=True),
        "contexts": {"ctx": CTX},
        "outputs": ["local", "tar"],
    },
    "copy-dir-into-existing": {
        "graph": lambda c: c.scratch().file(
            c.llb.mkdir("/d", 0o711, created=T2001).copy(c.local("ctx"), "/dir", "/d/")
        ),
        "contexts": {"ctx": CTX},
    },
    "copy-symlink-nofollow": {"graph": _copy("/link-a", "/l"), "contexts": {"ctx": CTX}},
    "copy-symlink-follow": {
        "graph": _copy("/link-a", "/l", follow_symlinks=True),
        "contexts": {"ctx": CTX},
    },
    "copy-dir-symlink-follow": {
        "graph": _copy("/link-dir", "/ld", follow_symlinks=True),
        "contexts": {"ctx": CTX},
    },
    "copy-through-symlinked-dir": {
        "graph": _copy("/link-dir/sub", "/s"),
        "contexts": {"ctx": CTX},
    },
    "copy-into-symlinked-dest": {
        "graph": lambda c: c.scratch().file(
            c.llb.copy(c.local("ctx"), "/dir", "/dir")
            .copy(c.local("ctx"), "/link-dir", "/link-dir")
            .copy(c.local("ctx"), "/a.txt", "/link-dir/sub/a-copy.txt")
            .mkfile("/link-dir/made", 0o644, "m", created=T2001)
        ),
        "contexts": {"ctx": CTX},
    },
    "copy-wildcard": {
        "graph": _copy("/dir/*.txt", "/w/", allow_wildcard=True, create_dest_path=True),
        "contexts": {"ctx": CTX},
    },
    "copy-wildcard-dirs": {
        "graph": _copy("/d*", "/w/", allow_wildcard=True, create_dest_path=True),
        "contexts": {"ctx": CTX},
    },
    "copy-wildcard-single-to-name": {
        "graph": _copy("/a.*", "/single", allow_wildcard=True),
        "contexts": {"ctx": CTX},
    },
    "copy-wildcard-empty-allowed": {
        "graph": lambda c: c.scratch().file(
            c.llb.mkfile("/keep", 0o644, "k", created=T2001).copy(
                c.local("ctx"),
                "/nomatch*",
                "/w/",
                allow_wildcard=True,
                allow_empty_wildcard=True,
                create_dest_path=True,
            )
        ),
        "contexts": {"ctx": CTX},
    },
    "copy-wildcard-empty-error": {
        "graph": _copy("/nomatch*", "/w/", allow_wildcard=True, create_dest_path=True),
        "contexts": {"ctx": CTX},
        "expect_error": "/nomatch*",
    },
    "copy-missing-source": {
        "graph": _copy("/missing.txt", "/m"),
        "contexts": {"ctx": CTX},
        "expect_error": "missing.txt",
    },
    "copy-chown-ids": {
        "graph": _copy("/dir", "/d", owner="1234:5678", create_dest_path=True),
        "contexts": {"ctx": CTX},
        "outputs": ["local", "tar"],
    },
    "copy-chown-names": {
        "graph": _on_base(
            lambda c: c.llb.copy(c.local("ctx"), "/dir", "/home/user/d", owner="user:user")
        ),
        "contexts": {"ctx": CTX},
        "outputs": ["local", "tar"],
    },
    "copy-chown-unknown-name": {
        "graph": _on_base(lambda c: c.llb.copy(c.local("ctx"), "/a.txt", "/x", owner="nobody9")),
        "contexts": {"ctx": CTX},
        "outputs": ["local", "tar"],
    },
    "copy-mode": {
        "graph": _copy("/dir", "/d", mode=0o700),
        "contexts": {"ctx": CTX},
        "outputs": ["local", "tar"],
    },
    "copy-timestamp": {
        "graph": _copy("/dir", "/d", created=T2001),
        "contexts": {"ctx": CTX},
        "outputs": ["local", "tar"],
    },
    "copy-include-exclude": {
        "graph": _copy(
            "/",
            "/f",
            dir_contents_only=True,
            include_patterns=["*.txt", "dir/sub"],
            exclude_patterns=["**/*.md", "dir/sub/deep"],
        ),
        "contexts": {"ctx": CTX},
    },
    "copy-exclude-only": {
        "graph": _copy("/dir", "/f", exclude_patterns=["*.log", "sub/**/five.txt"]),
        "contexts": {"ctx": CTX},
    },
    "copy-hardlinks": {
        "graph": lambda c: c.scratch().file(
            c.llb.copy(c.local("ctx"), "/hl1", "/h/hl1", create_dest_path=True).copy(
                c.local("ctx"), "/", "/all", include_patterns=["hl*"]
            )
        ),
        "contexts": {"ctx": CTX},
    },
    "copy-overwrite-file": {
        "graph": lambda c: c.scratch().file(
            c.llb.mkfile("/a.txt", 0o600, "old", owner="7:7", created=T2001).copy(
                c.local("ctx"), "/a.txt", "/a.txt"
            )
        ),
        "contexts": {"ctx": CTX},
    },
    "copy-dir-onto-file": {
        "graph": lambda c: c.scratch().file(
            c.llb.mkfile("/d", 0o644, "file", created=T2001).copy(c.local("ctx"), "/dir", "/d")
        ),
        "contexts": {"ctx": CTX},
        "expect_error": "",
    },
    "copy-from-exec-state": {
        "graph": lambda c: c.scratch().file(
            c.llb.copy(
                c.base().sh("mkdir -p /gen && echo made > /gen/f && chmod 604 /gen/f"),
                "/gen",
                "/g",
            )
        ),
    },
    "mkdir-options": {
        "graph": lambda c: c.scratch().file(
            c.llb.mkdir("/a/b/c", 0o751, parents=True, owner="10:20", created=T2001)
            .mkdir("/a/b/c", 0o700, parents=True)
            .mkdir("/plain", 0o700)
        ),
        "outputs": ["local", "tar"],
    },
    "mkdir-missing-parent": {
        "graph": lambda c: c.scratch().file(c.llb.mkdir("/x/y", 0o755)),
        "expect_error": "/x/y",
    },
    "mkdir-exists": {
        "graph": lambda c: c.scratch().file(c.llb.mkdir("/x", 0o755).mkdir("/x", 0o700)),
    },
    "mkfile-options": {
        "graph": lambda c: c.scratch().file(
            c.llb.mkdir("/d", 0o755, created=T2001)
            .mkfile("/d/f", 0o4755, "data\n", owner="3:4", created=T2001)
            .mkfile("/d/empty", 0o600, created=T2001)
            .mkfile("/d/now", 0o644, "now")
        ),
        "outputs": ["local", "tar"],
    },
    "mkfile-missing-parent": {
        "graph": lambda c: c.scratch().file(c.llb.mkfile("/no/f", 0o644, "x")),
        "expect_error": "/no/f",
    },
    "mkfile-names-on-base": {
        "graph": _on_base(
            lambda c: c.llb.mkfile("/home/user/f", 0o640, "u", owner="user", created=T2001)
        ),
        "outputs": ["local", "tar"],
    },
    "rm-variants": {
        "graph": lambda c: c.scratch().file(
            c.llb.copy(c.local("ctx"), "/", "/", dir_contents_only=True)
            .rm("/a.txt")
            .rm("/dir/sub")
            .rm("/missing", allow_not_found=True)
            .rm("/dir/*.log", allow_wildcard=True)
            .rm("/link-dir")
        ),
        "contexts": {"ctx": CTX},
    },
    "rm-missing": {
        "graph": lambda c: c.scratch().file(
            c.llb.mkfile("/keep", 0o644, "k", created=T2001).rm("/missing")
        ),
    },
    "multi-input-chain": {
        "graph": lambda c: c.scratch().file(
            c.llb.copy(c.local("ctx"), "/a.txt", "/from-ctx")
            .copy(c.local("other"), "/", "/o", dir_contents_only=True)
            .mkfile("/o/new", 0o644, "n", created=T2001)
            .rm("/o/x")
        ),
        "contexts": {"ctx": CTX, "other": {"x": "x\n", "y/z": "z\n"}},
    },
    "copy-attempt-unpack": {
        "graph": lambda c: c.scratch().file(
            c.llb.copy(
                c.local("ctx"), "/arch.tar", "/u/", attempt_unpack=True, create_dest_path=True
            )
            .copy(c.local("ctx"), "/arch.tar.gz", "/u/", attempt_unpack=True)
            .copy(c.local("ctx"), "/a.txt", "/u/", attempt_unpack=True)
        ),
        "contexts": {"ctx": CTX},
        "outputs": ["local", "tar"],
    },
    "copy-dir-dot-and-slash": {
        "graph": lambda c: c.scratch().file(
            c.llb.copy(c.local("ctx"), "/dir/.", "/dot", create_dest_path=True).copy(
                c.local("ctx"), "/link-dir/", "/slash", create_dest_path=True
            )
        ),
        "contexts": {"ctx": CTX},
    },
    "copy-abs-symlink-follow": {
        "graph": _copy("/abs-link", "/abs", follow_symlinks=True),
        "contexts": {"ctx": CTX},
    },
    "copy-dangling-follow": {
        "graph": _copy("/dangling", "/dd", follow_symlinks=True),
        "contexts": {"ctx": CTX},
        "expect_error": "nowhere",
    },
    "copy-wildcard-follow": {
        "graph": _copy(
            "/link-*", "/wf/", allow_wildcard=True, follow_symlinks=True, create_dest_path=True
        ),
        "contexts": {"ctx": CTX},
    },
}
