"""Self-tests of the shared integration fixtures (conftest.py + imagefixtures.py).

The images are deterministic and what an independent client (skopeo) reads back; builds pick
the right manifest from the multi-platform index; the passwd/group users of the busybox base
are what an exec running as ``bkuser`` sees; the htpasswd and token registries admit pushes
only with the fixture's credentials; the git daemon serves branches, tags and a submodule over
git:// and file://, and bkcore's git source builds from both; the HTTP server answers
conditional requests with 304.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import imagefixtures as imf
import pytest

from bkcore import llb
from bkcore.errors import SourceError
from bkcore.llb.platforms import Platform
from bkcore.registry_client import ImageReference, RegistryClient

pytestmark = pytest.mark.integration


def _skopeo_raw(ref: str, *extra: str) -> bytes:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.skip("skopeo not installed")
    argv = [skopeo, "inspect", "--tls-verify=false", "--raw", *extra, f"docker://{ref}"]
    return subprocess.run(argv, check=True, capture_output=True, timeout=60).stdout


def test_images_are_deterministic_and_read_back_by_skopeo(images: Any, registry: Any) -> None:
    first, again = images.busybox_image(), images.busybox_image()
    assert (first.manifest, first.config, first.layers) == (
        again.manifest,
        again.config,
        again.layers,
    )
    ref = images.push(registry, "fixture/busybox:1", first)
    assert _skopeo_raw(ref) == first.manifest
    config = json.loads(first.config)
    assert config["rootfs"]["diff_ids"] == first.diff_ids
    assert config["architecture"] == Platform.host().architecture


def test_index_selects_the_platform_in_a_build(bk: Any, images: Any, registry: Any) -> None:
    host = str(Platform.host())
    other = "linux/arm64" if host != "linux/arm64" else "linux/amd64"
    imgs = images.multiplatform_images([host, other])
    ref, index_digest = images.push_index(registry, "fixture/multi:1", imgs)
    raw = json.loads(_skopeo_raw(ref))
    assert [m["digest"] for m in raw["manifests"]] == [imgs[host].digest, imgs[other].digest]
    assert images.sha(images.index_of(imgs)) == index_digest

    out = bk.tmp / "other"
    bk.build(llb.image(ref, platform=other), out=out)
    assert (out / "etc/arch").read_text() == other
    assert not (out / "bin").exists()  # only the host image carries busybox

    # the host image runs: an exec reads the marker chosen for the host platform
    run = llb.image(ref).sh("cat /etc/arch > /out/arch", mounts=[llb.bind("/out", llb.scratch())])
    mine = bk.tmp / "mine"
    bk.build(run.get_mount("/out"), out=mine)
    assert (mine / "arch").read_text() == host


def test_passwd_users_seen_by_an_exec_as_bkuser(bk: Any, images: Any, registry: Any) -> None:
    ref = images.push(registry, "fixture/users:1", images.busybox_image())
    script = (
        "cd /home/bkuser; id > id; whoami > whoami; echo t > /tmp/mine; "
        "stat -c '%u:%g %a' /tmp/mine > tmpfile; stat -c '%a' /tmp > tmp; stat -c %u:%g . > owner"
    )
    state = llb.image(ref).user("bkuser").sh(script)
    out = bk.tmp / "out"
    bk.build(state.root(), out=out)
    home = out / "home/bkuser"
    assert (home / "id").read_text().split()[:2] == ["uid=1000(bkuser)", "gid=1000(bkgroup)"]
    assert (home / "whoami").read_text() == "bkuser\n"
    assert (home / "tmpfile").read_text() == "1000:1000 644\n"  # /tmp is writable (1777)
    assert (home / "tmp").read_text() == "1777\n"
    assert (home / "owner").read_text() == "1000:1000\n"  # and bkuser could write there
    # by number, the group name comes from /etc/group
    by_id = llb.image(ref).sh("id -gn > /tmp/g", user="1000")
    out2 = bk.tmp / "out2"
    bk.build(by_id.root(), out=out2)
    assert (out2 / "tmp/g").read_text() == "bkgroup\n"


def _resolve(host: str, name: str, creds: tuple[str, str] | None) -> str:
    async def main() -> str:
        provider = (lambda _h: creds) if creds else None
        async with RegistryClient(credentials=provider) as client:
            desc = await client.resolve(ImageReference.parse(f"{host}/{name}"))
            return desc.digest

    return asyncio.run(asyncio.wait_for(main(), 60))


def test_auth_registries_need_the_fixture_credentials(
    images: Any, auth_registry: Any, token_registry: Any
) -> None:
    image = images.busybox_image()
    for server in (auth_registry, token_registry):
        images.push(server, "private/busybox:1", image)
        assert _resolve(server.host, "private/busybox:1", server.credentials) == image.digest
        with pytest.raises(SourceError):
            _resolve(server.host, "private/busybox:1", None)
        with pytest.raises(SourceError, match="rejected"):
            _resolve(server.host, "private/busybox:1", (imf.USER, "wrong"))
    scopes = {s for q in token_registry.tokens.requests for s in q.get("scope", [])}
    assert "repository:private/busybox:pull,push" in scopes
    assert (
        _skopeo_raw(f"{auth_registry.host}/private/busybox:1", f"--creds={imf.USER}:{imf.PASSWORD}")
        == image.manifest
    )


def _git(url: str, ref: str) -> Any:
    """A git source for ``url`` (git:// or file://) written directly: the SDK's llb.git
    turns scheme-less remotes such as file:// into https://."""
    from bkcore.llb.sourceop import OpMeta, SourceOp, _state

    ident = "127.0.0.1/" + url.rsplit("/", 1)[-1] + "#" + ref
    op = SourceOp("git://" + ident, {"git.fullurl": url}, {"source.git"}, meta=OpMeta())
    return _state(op)


def test_git_server_serves_branches_tags_and_submodules(
    bk: Any, git_server: Any, tmp_path: Path
) -> None:
    lib = git_server.repo("lib", {"lib.txt": "library\n"})
    app = git_server.repo("app", {"a.txt": "one\n"})
    v1 = app.tag("v1", message="first")
    dev = app.commit({"a.txt": "dev\n"}, "on dev", branch="dev")
    main = app.commit({"b.txt": "two\n"}, "second")
    with_sub = app.add_submodule(lib, "vendor/lib")
    heads = subprocess.run(
        ["git", "ls-remote", app.url], check=True, capture_output=True, text=True
    ).stdout
    refs = {line.split("\t")[1]: line.split("\t")[0] for line in heads.splitlines()}
    assert refs["refs/heads/main"] == with_sub != main
    assert refs["refs/heads/dev"] == dev
    assert refs["refs/tags/v1^{}"] == v1
    clone = tmp_path / "clone"
    imf.git("clone", "-q", "--recurse-submodules", app.file_url, str(clone), cwd=tmp_path)
    assert (clone / "vendor/lib/lib.txt").read_text() == "library\n"

    for url, ref, want in [
        (app.url, "v1", {"a.txt": "one\n"}),
        (app.file_url, "dev", {"a.txt": "dev\n"}),
    ]:
        out = bk.tmp / ref
        bk.build(_git(url, ref), out=out)
        assert {p.name: p.read_text() for p in out.iterdir() if p.is_file()} == want
    out = bk.tmp / "main"
    bk.build(_git(app.url, "main"), out=out)
    assert (out / "vendor/lib/lib.txt").read_text() == "library\n"


def test_http_server_etag_and_conditional_get(http_server: Any) -> None:
    url = http_server.put("/files/a.bin", b"payload")
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"payload"
        etag, modified = resp.headers["ETag"], resp.headers["Last-Modified"]
    assert etag == http_server.etag(b"payload")
    for header, value in (("If-None-Match", etag), ("If-Modified-Since", modified)):
        req = urllib.request.Request(url, headers={header: value})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 304
    http_server.put("/files/a.bin", b"changed", mtime=1600000000.0)
    req = urllib.request.Request(url, headers={"If-None-Match": etag})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.read() == b"changed" and resp.headers["ETag"] != etag
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(http_server.url + "/nope", timeout=10)
    assert missing.value.code == 404
    assert [r[:2] for r in http_server.requests][:2] == [("GET", "/files/a.bin")] * 2
