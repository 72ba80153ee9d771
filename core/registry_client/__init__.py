"""Async OCI distribution (registry) client on httpx.

Resolve tags to digests, fetch manifests and indexes (with platform selection), stream blobs
verified against their digests, and push blobs and manifests. Anonymous, basic and bearer-token
auth from ``WWW-Authenticate`` challenges; credentials come from a callback; hosts
(plain HTTP, TLS, mirrors) from ``registries.toml`` (:mod:`.hosts`). Not the plugin
registry (that is :mod:`bkcore.registry`).
"""

from __future__ import annotations

from bkcore.registry_client.auth import Credentials, CredentialsCallback, parse_challenges
from bkcore.registry_client.client import (
    MAX_MANIFEST_SIZE,
    Descriptor,
    Manifest,
    PushOutcome,
    RegistryClient,
)
from bkcore.registry_client.hosts import HostOptions, load_hosts
from bkcore.registry_client.platforms import select_manifest
from bkcore.registry_client.reference import ImageReference, is_loopback_host
from bkcore.registry_client.transport import AuthState, Connections, RetryPolicy

__all__ = [
    "MAX_MANIFEST_SIZE",
    "AuthState",
    "Connections",
    "Credentials",
    "CredentialsCallback",
    "Descriptor",
    "HostOptions",
    "ImageReference",
    "Manifest",
    "PushOutcome",
    "RegistryClient",
    "RetryPolicy",
    "is_loopback_host",
    "load_hosts",
    "parse_challenges",
    "select_manifest",
]
