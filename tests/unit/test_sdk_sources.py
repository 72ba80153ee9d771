"""Source op encoding: identifiers, attrs, caps and platform per scheme."""

from __future__ import annotations

import pytest

from bkcore import llb
from bkcore.errors import DefinitionError
from bkcore.llb import pb


def _source(st: llb.State, local_unique_id: str | None = None) -> tuple[pb.Op, pb.OpMetadata]:
    d = st.marshal(platform="linux/amd64", local_unique_id=local_unique_id)
    assert d.head is not None
    return d.op(d.head), d.metadata[d.head]


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("alpine:3.17", "docker.io/library/alpine:3.17"),
        ("user/app", "docker.io/user/app:latest"),
        ("index.docker.io/library/x:1", "docker.io/library/x:1"),
        ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest"),
        ("localhost/a/b:t", "localhost/a/b:t"),
        ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r@sha256:" + "a" * 64),
        ("r:t@sha256:" + "b" * 64, "docker.io/library/r:t@sha256:" + "b" * 64),
    ],
)
def test_image_reference_normalised(ref: str, want: str) -> None:
    op, md = _source(llb.image(ref))
    assert op.source.identifier == "docker-image://" + want
    assert not op.source.attrs
    assert (op.platform.os, op.platform.architecture) == ("linux", "amd64")
    assert dict(md.caps) == {"source.image": True}


@pytest.mark.parametrize("ref", ["Busybox", "a b", "x:" + "t" * 200, "f" * 64])
def test_invalid_image_reference(ref: str) -> None:
    with pytest.raises(DefinitionError):
        llb.image(ref)


def test_image_options() -> None:
    op, md = _source(
        llb.image("busybox", resolve_mode="local", record_type="internal", layer_limit=2)
    )
    assert dict(op.source.attrs) == {
        "image.layerlimit": "2",
        "image.recordtype": "internal",
        "image.resolvemode": "local",
    }
    assert set(md.caps) == {"source.image", "source.image.layerlimit"}
    with pytest.raises(DefinitionError):
        llb.image("busybox", resolve_mode="sometimes")  # type: ignore[arg-type]


def test_local_unique_id_and_patterns_json() -> None:
    st = llb.local("ctx", include_patterns=["a<b>&c", "é"], exclude_patterns=["*.o"])
    op, md = _source(st, local_unique_id="uid1")
    attrs = dict(op.source.attrs)
    assert attrs["local.includepattern"] == '["a\\u003cb\\u003e\\u0026c","é"]'
    assert attrs["local.excludepatterns"] == '["*.o"]'
    assert attrs["local.unique"] == "uid1"
    assert not op.platform.architecture  # local sources carry no platform
    assert {"source.local.unique", "source.local.includepatterns"} <= set(md.caps)
    # a random id by default, 25 chars base-36 like the Go client
    a, _ = _source(llb.local("ctx"))
    b, _ = _source(llb.local("ctx"))
    ua, ub = a.source.attrs["local.unique"], b.source.attrs["local.unique"]
    assert ua != ub and len(ua) == 25 and ua.isalnum()


def test_local_with_session_has_no_unique() -> None:
    op, md = _source(llb.local("ctx", session_id="s1", differ="metadata", differ_required=True))
    assert dict(op.source.attrs) == {"local.differ": "metadata", "local.session": "s1"}
    assert set(md.caps) == {"source.local", "source.local.sessionid", "source.local.differ"}


@pytest.mark.parametrize(
    ("remote", "ident", "fullurl", "ssh"),
    [
        (
            "https://github.com/a/b.git",
            "github.com/a/b.git#main",
            "https://github.com/a/b.git",
            False,
        ),
        ("github.com/a/b.git", "github.com/a/b.git#main", "https://github.com/a/b.git", False),
        ("git://host/r.git", "host/r.git#main", "git://host/r.git", False),
        ("git@github.com:a/b.git", "github.com/a/b.git#main", "git@github.com:a/b.git", True),
        ("ssh://git@host/r.git", "host/r.git#main", "ssh://git@host/r.git", True),
    ],
)
def test_git_remotes(remote: str, ident: str, fullurl: str, ssh: bool) -> None:
    op, md = _source(llb.git(remote, "main"))
    assert op.source.identifier == "git://" + ident
    attrs = dict(op.source.attrs)
    assert attrs["git.fullurl"] == fullurl
    assert attrs["git.authtokensecret"] == "GIT_AUTH_TOKEN"
    assert attrs["git.authheadersecret"] == "GIT_AUTH_HEADER"
    assert ("git.mountsshsock" in attrs) is ssh
    assert ("source.git.mountsshsock" in md.caps) is ssh
    assert "source.git.httpauth" not in md.caps
    assert not op.platform.architecture


def test_git_options() -> None:
    op, md = _source(
        llb.git(
            "git@h:r.git",
            known_ssh_hosts="h ssh-ed25519 AAAA",
            mount_ssh_sock="deploy",
            auth_token_secret="TOK",
            keep_git_dir=True,
        )
    )
    attrs = dict(op.source.attrs)
    assert op.source.identifier == "git://h/r.git"
    assert attrs["git.knownsshhosts"] == "h ssh-ed25519 AAAA"
    assert attrs["git.mountsshsock"] == "deploy"
    assert attrs["git.authtokensecret"] == "TOK"
    assert attrs["git.keepgitdir"] == "true"
    assert {"source.git.httpauth", "source.git.knownsshhosts", "source.git.keepgitdir"} <= set(
        md.caps
    )


def test_http_options() -> None:
    op, md = _source(llb.http("http://h/f", perm=0o755, filename="g"))
    assert op.source.identifier == "http://h/f"
    assert dict(op.source.attrs) == {"http.filename": "g", "http.perm": "0755"}
    assert set(md.caps) == {"source.http", "source.http.perm"}
    with pytest.raises(DefinitionError):
        llb.http("ftp://h/f")
    with pytest.raises(DefinitionError):
        llb.http("https://h/f", checksum="nope")


def test_oci_layout_platform_and_layer_limit() -> None:
    ref = "app@sha256:" + "c" * 64
    op, md = _source(llb.oci_layout(ref, layer_limit=1, platform="linux/arm64/v8"))
    assert op.source.identifier == "oci-layout://" + ref
    assert dict(op.source.attrs) == {"oci.layerlimit": "1"}
    assert (op.platform.architecture, op.platform.variant) == ("arm64", "")
    assert dict(md.caps) == {"source.ocilayout": True}


def test_scratch_marshals_to_an_empty_definition() -> None:
    d = llb.scratch().marshal()
    assert d.to_bytes() == b"" and d.head is None and d.terminal is None
    assert llb.Definition.from_bytes(b"").head is None


def test_custom_name_and_meta() -> None:
    st = llb.image(
        "busybox",
        custom_name="base",
        meta=llb.OpMeta(
            description={"x": ""},
            export_cache=False,
            progress_group=llb.ProgressGroup("g", "Group"),
        ),
    )
    d = st.marshal(platform="linux/amd64", ignore_cache=True)
    md = d.metadata[d.head or ""]
    assert dict(md.description) == {"llb.customname": "base", "x": ""}
    assert md.ignore_cache is True
    assert md.progress_group.id == "g" and md.progress_group.name == "Group"
    term = d.metadata[d.terminal or ""]
    assert set(term.caps) == {
        "constraints",
        "platform",
        "meta.description",
        "meta.ignorecache",
        "meta.exportcache",
    }
    # Go writes empty map values; the bytes carry the "x" entry with an empty value
    assert b"\x0a\x01x\x12\x00" in d.to_bytes()


def test_worker_filters_go_to_op_constraints() -> None:
    st = llb.image("busybox", meta=llb.OpMeta(worker_filters=("labels.a==b",)))
    op, _ = _source(st)
    assert op.constraints.filter == ["labels.a==b"]


def test_oci_layout_needs_a_digest() -> None:
    with pytest.raises(DefinitionError, match="digest"):
        llb.oci_layout("app:latest")
