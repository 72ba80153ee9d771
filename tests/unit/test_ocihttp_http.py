"""http(s) source without a network or a store: attr parsing (Go's ParseInt rules), how the
file is named, the BuildKit cache key document, credentials redacted, and the per-URL memory
of ETags / Last-Modified."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from bkcore.errors import SourceError
from bkcore.pluginmanager import BkPluginManager
from bkcore.sources.http import meta
from bkcore.sources.http.download import etag_value, mtime_of
from bkcore.sources.http.spec import (
    DEFAULT_FILENAME,
    HTTPSpec,
    file_name,
    go_parse_int,
    key_string,
    parse,
    redact,
    url_hash,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [("0640", 0o640), ("640", 640), ("0x1a4", 420), ("0o755", 0o755), ("0b101", 5), ("0", 0)],
)
def test_go_parse_int_base_from_prefix(text: str, value: int) -> None:
    assert go_parse_int(text) == value


@pytest.mark.parametrize("text", ["08", "abc", "", "0x", "1_", "9" * 30])
def test_go_parse_int_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        go_parse_int(text)


def test_parse_attrs() -> None:
    spec = parse(
        "https://example.com/a/b.tar",
        {
            "http.checksum": "sha256:" + "ab" * 32,
            "http.filename": "x.tar",
            "http.perm": "0755",
            "http.uid": "1000",
            "http.gid": "0x10",
        },
    )
    assert spec == HTTPSpec(
        "https://example.com/a/b.tar", "sha256:" + "ab" * 32, "x.tar", 0o755, 1000, 16
    )
    assert spec.mode == 0o755
    assert parse("http://h/f", {}).mode == 0o600  # BuildKit's default


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"http.checksum": "md5:abc"}, "invalid http.checksum"),
        ({"http.checksum": "sha256:abc"}, "invalid http.checksum"),
        ({"http.filename": "../x"}, "invalid http.filename"),
        ({"http.filename": "a/b"}, "invalid http.filename"),
        ({"http.filename": ".."}, "invalid http.filename"),
        ({"http.perm": "rw-"}, "invalid http.perm"),
        ({"http.perm": "0100000"}, "invalid http.perm"),
        ({"http.uid": "-1"}, "out of range"),
    ],
)
def test_parse_refuses_bad_attrs(attrs: dict[str, str], message: str) -> None:
    with pytest.raises(SourceError, match=message) as info:
        parse("https://example.com/f", attrs)
    assert "https://example.com/f" in str(info.value)


@pytest.mark.parametrize("identifier", ["ftp://h/f", "https://", "http://h:port/f"])
def test_parse_refuses_bad_urls(identifier: str) -> None:
    with pytest.raises(SourceError):
        parse(identifier, {})


def test_file_name_precedence() -> None:
    plain = parse("https://h/dir/file.tgz?x=1", {})
    assert file_name(plain) == "file.tgz"
    assert file_name(plain, 'attachment; filename="report.pdf"') == "report.pdf"
    assert file_name(plain, "attachment; filename=../../etc/passwd") == "passwd"
    assert file_name(plain, 'attachment; filename="dir/"') == "file.tgz"  # ends in /: ignored
    assert file_name(plain, 'attachment; filename=".."') == "file.tgz"
    assert file_name(plain, "attachment") == "file.tgz"
    named = parse("https://h/dir/file.tgz", {"http.filename": "mine"})
    assert file_name(named, 'attachment; filename="report.pdf"') == "mine"
    assert file_name(parse("https://h/dir/", {})) == "dir"  # trailing slashes dropped
    assert file_name(parse("https://h/", {})) == DEFAULT_FILENAME
    assert file_name(parse("https://h", {})) == DEFAULT_FILENAME
    assert file_name(parse("https://h/a/..", {})) == DEFAULT_FILENAME
    assert file_name(parse("https://h/a%2Fb", {})) == "b"  # decoded, then the last element


def test_key_string_is_buildkits_go_json() -> None:
    spec = parse("https://h/f", {"http.perm": "0644"})
    digest = "sha256:" + "0" * 64
    doc = f'{{"Filename":"a\\u0026b","Perm":420,"UID":0,"GID":0,"Checksum":"{digest}"}}'
    assert key_string(spec, "a&b", digest) == "sha256:" + hashlib.sha256(doc.encode()).hexdigest()
    lm = "Wed, 01 Jan 2020 00:00:00 GMT"
    with_lm = doc[:-1] + f',"LastModTime":"{lm}"}}'
    assert key_string(spec, "a&b", digest, lm) == (
        "sha256:" + hashlib.sha256(with_lm.encode()).hexdigest()
    )
    # The URL is not part of the key: the same file from another URL is the same key.
    other = parse("https://mirror/f", {"http.perm": "0644"})
    assert key_string(other, "a&b", digest) == key_string(spec, "a&b", digest)


def test_url_hash_separates_urls_and_attrs() -> None:
    a = parse("https://h/x/f", {})
    assert url_hash(a) != url_hash(parse("https://other/y/f", {}))
    assert url_hash(a) != url_hash(parse("https://h/x/f", {"http.perm": "0755"}))
    assert url_hash(a) == url_hash(parse("https://h/x/f", {}))


def test_redact() -> None:
    assert redact("https://user:pw@h/f") == "https://***@h/f"
    assert redact("https://token@h/f?a=b@c") == "https://***@h/f?a=b@c"
    assert redact("https://h/f") == "https://h/f"
    spec = parse("https://user:pw@h/f", {})
    assert "pw" not in spec.label
    with pytest.raises(SourceError) as info:
        parse("https://user:pw@h/f", {"http.filename": "a/b"})
    assert "pw" not in str(info.value)


def test_etag_and_mtime_helpers() -> None:
    assert etag_value('W/"abc"') == '"abc"'
    assert etag_value(None) == ""
    assert mtime_of("Wed, 01 Jan 2020 00:00:00 GMT") == 1577836800 * 10**9
    assert mtime_of("") == 0
    assert mtime_of("not a date") == 0


def _entry(n: int, etag: str = "", lm: str = "") -> meta.Entry:
    return meta.Entry(etag, lm, f"sha256:{n:064x}", "f", f"snap{n}")


def test_meta_remembers_newest_first_and_bounded(tmp_path: Path) -> None:
    assert meta.load(tmp_path, "u") == []

    async def run() -> None:
        for n in range(meta.MAX_ENTRIES + 2):
            await meta.remember(tmp_path, "u", _entry(n, etag=f'"e{n}"'))
        await meta.remember(tmp_path, "u", _entry(99, etag='"e3"'))  # same ETag: replaced

    asyncio.run(run())
    got = meta.load(tmp_path, "u")
    assert len(got) == meta.MAX_ENTRIES
    assert got[0] == _entry(99, etag='"e3"')
    assert [e.etag for e in got].count('"e3"') == 1
    assert '"e0"' not in [e.etag for e in got]  # the oldest fell off
    assert meta.load(tmp_path, "other") == []


def test_meta_last_modified_entries_and_bad_files(tmp_path: Path) -> None:
    lm = "Wed, 01 Jan 2020 00:00:00 GMT"
    asyncio.run(meta.remember(tmp_path, "u", _entry(1, lm=lm)))
    asyncio.run(meta.remember(tmp_path, "u", _entry(2, lm=lm)))
    assert meta.load(tmp_path, "u") == [_entry(2, lm=lm)]  # same date, no ETag: replaced
    path = tmp_path / meta.HTTP_DIR / "u.json"
    path.write_text("{not json")
    assert meta.load(tmp_path, "u") == []
    path.write_text('[{"etag": "x"}, 3]')
    assert meta.load(tmp_path, "u") == []


def test_plugins_register_both_schemes() -> None:
    manager = BkPluginManager()
    manager.load_builtins()
    sources = manager.registry("sources")
    assert {"http", "https", "oci-layout"} <= set(sources.keys())
    loaded = sources.load("https")
    source = loaded() if isinstance(loaded, type) else loaded
    instance = source.identify("https://h/f", {"http.perm": "0640"}, None)
    assert instance.spec.perm == 0o640
    with pytest.raises(SourceError):
        source.identify("https://h/f", {"http.checksum": "nope"}, None)
