"""User strings resolved against a rootfs's passwd and group files (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bkcore.errors import SolveError
from bkcore.workers.runc.users import ResolvedUser, resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
alice:x:1000:1000::/home/alice:/bin/sh
broken line
bob:x:1001:1001::/home/bob:/bin/sh
"""
GROUP = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice\nstaff:x:50:alice,bob\nodd:x:notanumber:bob\n"


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return str(tmp_path)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", ResolvedUser(0, 0, (0,))),
        ("root", ResolvedUser(0, 0, (0,))),
        ("alice", ResolvedUser(1000, 1000, (1000, 10, 50))),
        ("1000", ResolvedUser(1000, 1000, (1000, 10, 50))),
        ("bob", ResolvedUser(1001, 1001, (1001, 50))),
        ("alice:staff", ResolvedUser(1000, 50, (50,))),
        ("alice:10", ResolvedUser(1000, 10, (10,))),
        ("alice:777", ResolvedUser(1000, 777, (777,))),
        ("7:8", ResolvedUser(7, 8, (8,))),
        ("4242", ResolvedUser(4242, 0, (0,))),
        ("4242:staff", ResolvedUser(4242, 50, (50,))),
    ],
)
def test_forms(rootfs: str, user: str, expected: ResolvedUser) -> None:
    assert resolve_user(rootfs, user) == expected


def test_no_user_is_root_with_roots_supplementary_groups(tmp_path: Path) -> None:
    """BuildKit (conformance 036): without USER, `id` shows root's groups from /etc/group."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text("root:x:0:\nwheel:x:10:root\nstaff:x:50:alice\n")
    assert resolve_user(str(tmp_path), "") == ResolvedUser(0, 0, (0, 10))
    assert resolve_user(str(tmp_path / "none"), "") == ResolvedUser(
        0, 0, (0,)
    )  # no passwd: plain 0:0


def test_numeric_pair_needs_no_passwd(tmp_path: Path) -> None:
    assert resolve_user(str(tmp_path), "12:34") == ResolvedUser(12, 34, (34,))


def test_unknown_user_message(rootfs: str) -> None:
    with pytest.raises(SolveError) as info:
        resolve_user(rootfs, "mallory")
    assert str(info.value) == "unable to find user mallory: no matching entries in passwd file"


def test_unknown_group_message(rootfs: str) -> None:
    with pytest.raises(SolveError) as info:
        resolve_user(rootfs, "alice:nogroup")
    assert str(info.value) == "unable to find group nogroup: no matching entries in group file"


def test_missing_passwd_file(tmp_path: Path) -> None:
    with pytest.raises(SolveError, match="unable to find user alice"):
        resolve_user(str(tmp_path), "alice")
    assert resolve_user(str(tmp_path), "55") == ResolvedUser(55, 0, (0,))


def test_symlinked_passwd_cannot_escape_rootfs(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "passwd").write_text("evil:x:666:666::/:/bin/sh\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to("../../host/passwd")
    with pytest.raises(SolveError, match="unable to find user evil"):
        resolve_user(str(root), "evil")
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to(str(host / "passwd"))
    with pytest.raises(SolveError, match="unable to find user evil"):
        resolve_user(str(root), "evil")


def test_symlinked_passwd_inside_rootfs_is_followed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pw").write_text("carol:x:3:4::/:/bin/sh\n")
    (tmp_path / "etc" / "passwd").symlink_to("/data/pw")
    assert resolve_user(str(tmp_path), "carol") == ResolvedUser(3, 4, (4,))
