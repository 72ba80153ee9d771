"""The Secrets client-side attachable (session.md §6).

The protocol messages and the daemon side (``get_secret``, ``SecretNotFoundError``) live in
:mod:`bkcore.session.secrets`. Names are imported lazily (PEP 562) so loading the package's
``plugin`` module at start-up stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.lazy import module_getattr

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


__getattr__ = module_getattr(globals(), _WHERE)
