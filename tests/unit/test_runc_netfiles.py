"""Generated /etc/hosts and /etc/resolv.conf (no root needed)."""

from __future__ import annotations

import pytest

from bkcore.workers.runc.netfiles import hosts_file, resolv_conf


def test_hosts_file_lists_loopback_hostname_and_extra_hosts() -> None:
    data = hosts_file("buildkitsandbox", [("a.example", "10.0.0.1"), ("b", "fd00::0001")])
    assert data.decode().splitlines() == [
        "127.0.0.1\tlocalhost buildkitsandbox",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "10.0.0.1\ta.example",
        "fd00::1\tb",
    ]


def test_hosts_file_rejects_bad_ip() -> None:
    with pytest.raises(ValueError):
        hosts_file("h", [("x", "not-an-ip")])


def test_resolv_conf_drops_loopback_nameservers_in_sandbox() -> None:
    host = b"search corp\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\n"
    assert resolv_conf(host, host_network=False).decode().splitlines() == [
        "search corp",
        "nameserver 10.0.0.2",
    ]


def test_resolv_conf_defaults_when_only_loopback() -> None:
    out = resolv_conf(b"nameserver 127.0.0.53\noptions edns0\n", host_network=False).decode()
    assert "127.0.0.53" not in out
    assert "nameserver 8.8.8.8" in out and "options edns0" in out


def test_resolv_conf_host_network_is_unchanged() -> None:
    host = b"nameserver 127.0.0.53\n"
    assert resolv_conf(host, host_network=True) == host


def test_resolv_conf_without_host_file() -> None:
    assert b"nameserver 8.8.4.4" in resolv_conf(None, host_network=True)
