"""The Secrets attachable (session.md §6)."""

from bkcore.sessions.secrets.provider import (
    GETSECRET,
    SecretNotFoundError,
    SecretSource,
    SecretsProvider,
    get_secret,
    parse_secret_spec,
)

__all__ = [
    "GETSECRET",
    "SecretNotFoundError",
    "SecretSource",
    "SecretsProvider",
    "get_secret",
    "parse_secret_spec",
]
