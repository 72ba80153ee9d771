"""The Secrets client-side attachable (session.md §6).

The protocol messages and the daemon side (``get_secret``, ``SecretNotFoundError``) live in
:mod:`bkcore.session.secrets`. Names are imported lazily (PEP 562) so loading the package's
``plugin`` module at start-up stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bkcore.sessions.secrets.provider import (
        SecretSource,
        SecretsProvider,
        parse_secret_spec,
    )

_WHERE = {
    "SecretSource": "bkcore.sessions.secrets.provider",
    "SecretsProvider": "bkcore.sessions.secrets.provider",
    "parse_secret_spec": "bkcore.sessions.secrets.provider",
}

__all__ = ["SecretSource", "SecretsProvider", "parse_secret_spec"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
