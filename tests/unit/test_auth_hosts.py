"""The registry hosts file (registries.toml): parsing, errors, scheme and TLS rules."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bkcore import config
from bkcore.errors import SourceError
from bkcore.registry_client import Connections, HostOptions, load_hosts
from bkcore.registry_client.hosts import CONFIG_ENV, config_path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registries.toml"
    path.write_text(text)
    return path


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_hosts(tmp_path / "nope.toml") == {}


def test_full_entry(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "lan.pem").write_text("x")
    path = write(
        tmp_path,
        '[registry."reg.lan:5000"]\nhttp = true\ninsecure = true\n'
        'ca = ["certs/lan.pem"]\nmirrors = ["m1.lan", "127.0.0.1:5001"]\n'
        '[registry."docker.io"]\nmirrors = ["hub-mirror.lan:443"]\n',
    )
    hosts = load_hosts(path)
    assert hosts["reg.lan:5000"] == HostOptions(
        http=True,
        insecure=True,
        ca_files=(str(tmp_path / "certs" / "lan.pem"),),
        mirrors=("m1.lan", "127.0.0.1:5001"),
    )
    assert hosts["docker.io"] == HostOptions(mirrors=("hub-mirror.lan:443",))


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[registry."a:1"]\nhttp = true\nmirrors = [oops\n')
    with pytest.raises(SourceError) as info:
        load_hosts(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert "\n" not in message


def test_bad_toml_at_the_end_names_the_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[registry."a:1"]\nhttp = true\nmirrors = [\n')
    with pytest.raises(SourceError, match=r"registries.toml:3: .* at the end of the file"):
        load_hosts(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[registry."a:1"]\nhttp = "yes"\n', "http must be true or false"),
        ('[registry."a:1"]\nmirrors = "m:1"\n', "mirrors must be a list of strings"),
        ('[registry."a:1"]\nmirror = ["m:1"]\n', "unknown key 'mirror'"),
        ('[registry."a:1"]\nca = ["missing.pem"]\n', "missing.pem does not exist"),
        ('[registry."a b"]\nhttp = true\n', "'a b' is not a registry host"),
        ('[registry."a:1"]\nmirrors = ["http://m:1/"]\n', "is not a registry host"),
        ('[registries."a:1"]\nhttp = true\n', "unknown table or key 'registries'"),
    ],
)
def test_bad_values_are_one_line_naming_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SourceError, match=fragment) as info:
        load_hosts(path)
    assert str(info.value).startswith(str(path))


def test_path_from_env_then_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    config.set_root(tmp_path / "root")
    try:
        assert config_path() == tmp_path / "root" / "config" / "registries.toml"
        monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "mine.toml"))
        assert config_path() == tmp_path / "mine.toml"
        (tmp_path / "mine.toml").write_text('[registry."x:1"]\nhttp = true\n')
        assert load_hosts() == {"x:1": HostOptions(http=True)}
    finally:
        config.set_root(None)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.8.9.10", "http://127.8.9.10"),
        ("localhost:5000", "http://localhost:5000"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("10.0.0.1:5000", "https://10.0.0.1:5000"),
        ("reg.lan:5000", "http://reg.lan:5000"),  # http = true
        ("127.0.0.1:6000", "https://127.0.0.1:6000"),  # http = false beats loopback
        ("ghcr.io", "https://ghcr.io"),
        ("registry-1.docker.io", "https://registry-1.docker.io"),
    ],
)
def test_scheme_rules(host: str, url: str) -> None:
    conns = Connections(
        {"reg.lan:5000": HostOptions(http=True), "127.0.0.1:6000": HostOptions(http=False)}
    )
    assert conns.base_url(host) == url


def test_docker_io_entry_applies_to_the_hub_endpoint() -> None:
    conns = Connections({"docker.io": HostOptions(mirrors=("m:1",))})
    assert conns.options("registry-1.docker.io").mirrors == ("m:1",)
    assert conns.options("ghcr.io") == HostOptions()


def test_one_http_client_per_tls_setting() -> None:
    conns = Connections(
        {
            "a:1": HostOptions(insecure=True),
            "b:1": HostOptions(insecure=True, mirrors=("c:1",)),
            "d:1": HostOptions(http=True),
        }
    )

    async def main() -> None:
        first = conns.client("a:1")
        assert conns.client("b:1") is first  # same TLS setting: same client
        default = conns.client("ghcr.io")
        assert conns.client("d:1") is default and default is not first
        assert conns.clients_made == 2
        await conns.aclose()

    asyncio.run(main())


def test_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    conns = Connections({"reg.lan": HostOptions(ca_files=(str(bad),))})

    async def main() -> None:
        with pytest.raises(SourceError, match=r"reg.lan: cannot load CA file .*bad.pem"):
            conns.client("reg.lan")

    asyncio.run(main())
