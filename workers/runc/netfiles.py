"""Contents of the generated ``/etc/hosts`` and ``/etc/resolv.conf`` of a container."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

_DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844")


def hosts_file(hostname: str, extra_hosts: Sequence[tuple[str, str]] = ()) -> bytes:
    """``/etc/hosts``: localhost and the container hostname on loopback, then extra hosts.

    ``extra_hosts`` holds ``(host, ip)`` pairs; an invalid IP raises ``ValueError``.
    """
    lines = [f"127.0.0.1\tlocalhost {hostname}", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for host, ip in extra_hosts:
        address = ipaddress.ip_address(ip)
        lines.append(f"{address}\t{host}")
    return ("\n".join(lines) + "\n").encode()


def _is_loopback(value: str) -> bool:
    try:
        return ipaddress.ip_address(value.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def resolv_conf(host_conf: bytes | None, host_network: bool) -> bytes:
    """``/etc/resolv.conf`` derived from the host's.

    With the host network the host's file is used unchanged. Otherwise loopback nameservers
    (unreachable from another network namespace) are dropped, and public defaults are used
    when no nameserver is left.
    """
    text = (host_conf or b"").decode("utf-8", "replace")
    if host_network and text:
        return text.encode()
    kept: list[str] = []
    nameservers = 0
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and len(fields) > 1:
            if _is_loopback(fields[1]):
                continue
            nameservers += 1
        kept.append(line)
    if nameservers == 0:
        kept.extend(f"nameserver {ns}" for ns in _DEFAULT_NAMESERVERS)
    return ("\n".join(kept) + "\n").encode()
