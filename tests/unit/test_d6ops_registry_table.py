"""The daemon config's ``[registry."host"]`` tables (buildkitd.toml's registry hosts)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bkcore.api import daemon
from bkcore.api.address import DaemonConfigError
from bkcore.registry_client import hosts


@pytest.fixture(autouse=True)
def _no_process_hosts() -> Iterator[None]:
    yield
    hosts.set_process_hosts(None)


def test_registry_tables_become_the_process_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "lan.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    file = tmp_path / "bkcore.toml"
    file.write_text(
        '[registry."reg.lan:5000"]\n'
        "http = true\n"
        'mirrors = ["mirror.lan:5001"]\n'
        '[registry."docker.io"]\n'
        'mirrors = ["127.0.0.1:5002"]\n'
        'ca = ["lan.pem"]\n'
    )
    cfg = daemon.load_config(file, root=str(tmp_path))
    assert cfg.registry_hosts == {
        "reg.lan:5000": hosts.HostOptions(http=True, mirrors=("mirror.lan:5001",)),
        "docker.io": hosts.HostOptions(ca_files=(str(ca),), mirrors=("127.0.0.1:5002",)),
    }
    # a hosts file the process would otherwise read is replaced by the tables
    other = tmp_path / "registries.toml"
    other.write_text('[registry."elsewhere:1"]\ninsecure = true\n')
    monkeypatch.setenv(hosts.CONFIG_ENV, str(other))
    assert set(hosts.load_hosts()) == {"elsewhere:1"}
    hosts.set_process_hosts(cfg.registry_hosts)
    assert hosts.load_hosts() == cfg.registry_hosts
    assert set(hosts.load_hosts(other)) == {"elsewhere:1"}  # an explicit file is still read


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('debug = false\n[registry."reg.lan"]\nkeypair = []\n', 2, "unknown key 'keypair'"),
        ('[registry."reg.lan"]\nhttp = "yes"\n', 1, "http must be true or false"),
        ('[registry."bad host!"]\nhttp = true\n', 1, "is not a registry host"),
        ('registries = "x.toml"\n[registry."a"]\nhttp = true\n', 2, "not both"),
    ],
)
def test_bad_registry_tables_name_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    file = tmp_path / "bkcore.toml"
    file.write_text(text)
    with pytest.raises(DaemonConfigError) as info:
        daemon.load_config(file, root=str(tmp_path))
    assert str(info.value).startswith(f"{file}:{line}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
