"""git:// source: identifier/attr parsing, key strings, ref picking and git's environment."""

from __future__ import annotations

import pytest

from bkcore.errors import SourceError
from bkcore.sources.git.access import auth_scope, strip_credentials
from bkcore.sources.git.gitcmd import GitRunner
from bkcore.sources.git.remote import pick_ref
from bkcore.sources.git.spec import is_commit, key_string, parse, redact

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_parse_identifier_and_attrs() -> None:
    spec = parse(
        "git://github.com/moby/buildkit.git#v0.11.6:docs/dev",
        {"git.fullurl": "https://github.com/moby/buildkit.git", "git.keepgitdir": "true"},
    )
    assert spec.url == "https://github.com/moby/buildkit.git"
    assert (spec.ref, spec.subdir, spec.keep_git_dir) == ("v0.11.6", "docs/dev", True)
    assert (spec.token_secret, spec.header_secret) == ("GIT_AUTH_TOKEN", "GIT_AUTH_HEADER")
    assert spec.transport == "http"


def test_parse_defaults_to_https_and_head() -> None:
    spec = parse("git://example.com/repo.git", {})
    assert spec.url == "https://example.com/repo.git"
    assert spec.ref == "" and spec.ref_or_head == "HEAD"
    assert not spec.keep_git_dir and spec.subdir == ""


def test_parse_attrs_for_ssh_and_secrets() -> None:
    spec = parse(
        "git://example.com/org/repo.git#main",
        {
            "git.fullurl": "git@example.com:org/repo.git",
            "git.authtokensecret": "MY_TOKEN",
            "git.knownsshhosts": "example.com ssh-ed25519 AAAA",
            "git.mountsshsock": "default",
        },
    )
    assert spec.transport == "ssh"
    assert spec.token_secret == "MY_TOKEN"
    assert spec.known_ssh_hosts == "example.com ssh-ed25519 AAAA"
    assert spec.ssh_socket_id == "default"


@pytest.mark.parametrize(
    ("ident", "attrs"),
    [
        ("git://h/r.git#--upload-pack=touch /tmp/x", {}),
        ("git://h/r.git#-b", {}),
        ("git://h/r.git#main", {"git.fullurl": "--upload-pack=x"}),
        ("git://h/r.git#main", {"git.fullurl": "-oProxyCommand=x"}),
    ],
)
def test_option_like_ref_or_url_is_refused(ident: str, attrs: dict[str, str]) -> None:
    with pytest.raises(SourceError, match="looks like an option"):
        parse(ident, attrs)


@pytest.mark.parametrize(
    ("ident", "attrs", "message"),
    [
        ("local://x", {}, "expected git://"),
        ("git://#main", {}, "remote is empty"),
        ("git://h/r.git#a b", {}, "invalid ref"),
        ("git://h/r.git", {"git.fullurl": "ftp://h/r.git"}, "unsupported remote"),
        ("git://h/r.git", {"git.fullurl": "ext::sh -c x"}, "unsupported remote"),
        ("git://h/r.git", {"git.keepgitdir": "yes"}, "invalid git.keepgitdir"),
    ],
)
def test_bad_input_is_one_clear_error(ident: str, attrs: dict[str, str], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse(ident, attrs)


def test_key_string() -> None:
    plain = parse("git://h/r.git#main", {})
    assert key_string(plain, COMMIT) == COMMIT
    keep = parse("git://h/r.git#main:sub/dir", {"git.keepgitdir": "true"})
    assert key_string(keep, COMMIT) == COMMIT + ".git:sub/dir"
    # the subdir is keyed as written; one naming the root is no subdir at all
    assert key_string(parse("git://h/r.git#main:/sub/", {}), COMMIT) == COMMIT + ":/sub/"
    assert parse("git://h/r.git#main:/sub/", {}).subdir == "sub"
    root = parse("git://h/r.git#main:/", {})
    assert key_string(root, COMMIT) == COMMIT and root.subdir == ""
    # URL and auth are not part of the key
    other = parse(
        "git://h/r.git#x", {"git.fullurl": "git://mirror/r.git", "git.authtokensecret": "T"}
    )
    assert key_string(other, COMMIT) == key_string(plain, COMMIT)


def test_subdir_cannot_climb_out() -> None:
    assert parse("git://h/r.git#main:../../etc", {}).subdir == "etc"


def test_is_commit() -> None:
    assert is_commit(COMMIT)
    assert not is_commit(COMMIT[:39]) and not is_commit(COMMIT.upper()) and not is_commit("main")


def test_redact_hides_passwords_in_urls() -> None:
    assert redact("fatal: https://user:pw@host/r.git") == "fatal: https://***@host/r.git"
    assert strip_credentials("https://user:pw@host:8443/r.git") == "https://host:8443/r.git"
    assert auth_scope("https://user:pw@host:8443/a/r.git") == "https://host:8443/"
    err = parse("git://user:pw@host/r.git#nope", {})
    assert "pw" not in err.label


def test_pick_ref_prefers_branches_and_peeled_tags() -> None:
    listing = [
        ("a" * 40, "refs/heads/v1"),
        ("b" * 40, "refs/tags/v1"),
        ("c" * 40, "refs/tags/v1^{}"),
        ("d" * 40, "refs/tags/rel"),
        ("e" * 40, "refs/tags/rel^{}"),
        ("f" * 40, "refs/heads/feature/rel2"),
        ("1" * 40, "HEAD"),
    ]
    assert pick_ref(listing, "v1") == ("a" * 40, "refs/heads/v1")
    assert pick_ref(listing, "rel") == ("e" * 40, "refs/tags/rel")
    assert pick_ref(listing, "refs/tags/v1") == ("c" * 40, "refs/tags/v1")
    assert pick_ref(listing, "rel2") == ("f" * 40, "refs/heads/feature/rel2")
    assert pick_ref(listing, "HEAD") == ("1" * 40, "HEAD")
    assert pick_ref(listing, "missing") is None


def test_git_environment_is_private_and_carries_config_only_in_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GIT_DIR", "/elsewhere")
    monkeypatch.setenv("HOME", "/root-home")
    header = "Authorization: basic c2VjcmV0"
    env = GitRunner("/private", {"http.https://h/.extraheader": header}).environment()
    assert env["HOME"] == "/private" and env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert "GIT_DIR" not in env
    count = int(env["GIT_CONFIG_COUNT"])
    config = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(count)}
    assert config["http.https://h/.extraheader"] == header
    assert config["gc.auto"] == "0"
    assert "protocol.file.allow" not in config
