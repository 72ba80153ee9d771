"""Daemon config and addresses, wire conversions (timestamps, filters, usage records) and the
client/CLI sides that need no daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bkcore import config
from bkcore.api import daemon
from bkcore.api.client import Client, DaemonUnavailable, default_address
from bkcore.api.server import (
    GCPolicy,
    check_filters,
    match_filters,
    timestamp,
    usage_record,
)
from bkcore.cli.daemon_cmd import InfoCommand, to_record
from bkcore.cli.du_cmd import Record
from bkcore.cli.main import main, prescan
from bkcore.errors import DefinitionError


def test_parse_address() -> None:
    assert daemon.parse_address("unix:///run/x.sock") == daemon.Listener("unix", path="/run/x.sock")
    assert daemon.parse_address("tcp://127.0.0.1:1234") == daemon.Listener(
        "tcp", host="127.0.0.1", port=1234
    )
    assert daemon.parse_address("tcp://[::1]:99").host == "::1"
    assert str(daemon.parse_address("tcp://[::1]:99")) == "tcp://[::1]:99"
    for bad, text in (
        ("/run/x.sock", "want unix://PATH"),
        ("tcp://host", "want tcp://HOST:PORT"),
        ("tcp://h:99999", "want tcp://HOST:PORT"),
        ("ssh://h", "unsupported address scheme 'ssh'"),
        ("unix://", "no socket path"),
    ):
        with pytest.raises(daemon.DaemonConfigError, match=text):
            daemon.parse_address(bad)


def test_config_file_values(tmp_path: Path) -> None:
    file = tmp_path / "bkcored.toml"
    file.write_text(
        """
root = "/srv/bk"
registries = "/etc/r.toml"
insecure-entitlements = ["network.host"]
[grpc]
address = ["unix:///tmp/a.sock", "tcp://0.0.0.0:1234"]
[grpc.tls]
cert = "c.pem"
key = "k.pem"
ca = "ca.pem"
[worker]
max-parallelism = 3
[[worker.gcpolicy]]
keepDuration = "48h"
keepBytes = 1000
filters = ["type==source.local"]
[[worker.gcpolicy]]
all = true
keepDuration = 60
"""
    )
    cfg = daemon.load_config(file)
    assert cfg.root == Path("/srv/bk")
    assert cfg.registries == "/etc/r.toml"
    assert cfg.entitlements == frozenset({"network.host"})
    assert cfg.addresses == ("unix:///tmp/a.sock", "tcp://0.0.0.0:1234")
    assert (cfg.tls_cert, cfg.tls_key, cfg.tls_ca) == ("c.pem", "k.pem", "ca.pem")
    assert cfg.max_parallelism == 3
    assert cfg.gc_policy == (
        GCPolicy(keep_duration=48 * 3600, keep_bytes=1000, filters=("type==source.local",)),
        GCPolicy(all=True, keep_duration=60),
    )
    # --root wins over the file
    assert daemon.load_config(file, root=str(tmp_path)).root == tmp_path


def test_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    file = tmp_path / "d.toml"
    for text, message in (
        ("rooot = 1", "unknown key 'rooot'"),
        ("[worker]\nmax-parallelism = 'x'", "'max-parallelism' has the wrong type"),
        ("[worker]\nmax-parallelism = 0", "must be at least 1"),
        ("[[worker.gcpolicy]]\nkeepDuration = 'soon'", "invalid duration 'soon'"),
        ("insecure-entitlements = ['root.everything']", "unknown entitlement"),
        ("[grpc\n", "invalid TOML"),
    ):
        file.write_text(text)
        with pytest.raises(daemon.DaemonConfigError) as info:
            daemon.load_config(file)
        assert str(file) in str(info.value) and message in str(info.value), str(info.value)
    with pytest.raises(daemon.DaemonConfigError, match="cannot read daemon config"):
        daemon.load_config(tmp_path / "missing.toml")


def test_default_config_file_is_optional_and_defaults(tmp_path: Path) -> None:
    config.set_root(tmp_path)
    try:
        cfg = daemon.load_config(None)
        assert cfg.root == tmp_path
        assert cfg.addresses == () and cfg.worker == "runc" and cfg.gc_policy == ()
        assert config.daemon_socket() == tmp_path / "run" / "bkcore.sock"
        assert config.daemon_config_file() == tmp_path / "config" / "bkcored.toml"
    finally:
        config.set_root(None)


def test_tcp_without_tls_is_refused_before_anything_starts(tmp_path: Path) -> None:
    cfg = daemon.DaemonConfig(root=tmp_path / "root", addresses=("tcp://127.0.0.1:0",))
    with pytest.raises(daemon.DaemonConfigError, match="needs --tlscert and --tlskey"):
        asyncio.run(daemon.serve(cfg, plugins=None))  # type: ignore[arg-type]
    assert not (tmp_path / "root").exists()


def test_timestamp_conversion() -> None:
    ts = timestamp(1700000000.5)
    assert (ts.seconds, ts.nanos) == (1700000000, 500_000_000)
    ts = timestamp(1.9999999999)
    assert (ts.seconds, ts.nanos) == (2, 0)


def test_filters() -> None:
    fields = {"id": "abc", "type": "regular", "description": "mount / from exec", "inuse": "false"}
    assert match_filters([], fields)
    assert match_filters(["type==regular"], fields)
    assert not match_filters(["type!=regular"], fields)
    assert match_filters(["type==blob", "id==abc"], fields)  # items are OR'd
    assert not match_filters(["type==regular,inuse==true"], fields)  # parts are AND'd
    assert match_filters(["description~=^mount"], fields)
    assert match_filters(["id"], fields) and not match_filters(["parent"], fields)
    with pytest.raises(DefinitionError, match="invalid filter"):
        check_filters(["description~=("])


def test_usage_record_round_trip_keeps_what_du_shows() -> None:
    pinned = Record(
        id="snap1",
        type="regular",
        size=1234,
        in_use=False,
        reclaimable=False,  # a used snapshot sits on it
        mutable=False,
        last_used=1700000000.25,
        created_at=1600000000.0,
        description="mount / from exec /bin/sh",
        parent="snap0",
    )
    wire = usage_record(pinned)
    assert wire.shared and not wire.in_use
    assert wire.parents == ["snap0"] and wire.parent == "snap0"
    assert wire.record_type == "regular"
    back = to_record(type(wire)().parse(bytes(wire)))
    assert back == pinned
    free = Record("b", "blob", 5, False, True, False, 0.0, None, "", None)
    wire = usage_record(free)
    assert not wire.shared
    back = to_record(type(wire)().parse(bytes(wire)))
    assert back.reclaimable and back.last_used == 0.0 and back.parent is None


def test_client_names_the_address_it_cannot_reach(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/none.sock"

    async def go() -> None:
        async with Client(address) as client:
            await client.info()

    with pytest.raises(DaemonUnavailable) as info:
        asyncio.run(go())
    assert str(info.value).startswith(f"cannot connect to the daemon at {address}: ")


def test_default_address_and_global_addr_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BKCORE_HOST", "tcp://h:1")
    assert default_address() == "tcp://h:1"
    monkeypatch.delenv("BKCORE_HOST")
    assert default_address() == f"unix://{config.daemon_socket()}"
    assert prescan(["du", "--addr", "unix:///x"]).addr == "unix:///x"
    assert prescan(["--addr=unix:///y", "debug", "info"]).addr == "unix:///y"
    assert prescan(["--addr=unix:///y", "debug", "info"]).words == ["debug", "info"]


def test_debug_info_embedded(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    import bkcore

    InfoCommand.run(argparse.Namespace(addr=None, format="text"))
    assert capsys.readouterr().out == f"BuildKit: bkcore {bkcore.__version__}\n"


def test_cli_remote_command_without_daemon_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"unix://{tmp_path}/none.sock"
    assert main(["--addr", address, "du"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot connect to the daemon at {address}: No such file or directory\n"
