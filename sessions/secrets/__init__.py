"""The Secrets attachable (session.md §6).

Names are imported lazily (PEP 562) so loading the package's ``plugin`` module at
start-up stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bkcore.sessions.secrets.provider import (
        GETSECRET,
        SecretNotFoundError,
        SecretSource,
        SecretsProvider,
        get_secret,
        parse_secret_spec,
    )

_WHERE = {
    "GETSECRET": "bkcore.sessions.secrets.provider",
    "SecretNotFoundError": "bkcore.sessions.secrets.provider",
    "SecretSource": "bkcore.sessions.secrets.provider",
    "SecretsProvider": "bkcore.sessions.secrets.provider",
    "get_secret": "bkcore.sessions.secrets.provider",
    "parse_secret_spec": "bkcore.sessions.secrets.provider",
}

__all__ = [
    "GETSECRET",
    "SecretNotFoundError",
    "SecretSource",
    "SecretsProvider",
    "get_secret",
    "parse_secret_spec",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
