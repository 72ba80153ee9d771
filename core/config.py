"""Where bkcore keeps its state, configuration and runtime files.

The only module that imports :mod:`platformdirs` (lazily). Three directories:

============ ======================= =============================== =====================
function     as root (Linux)         as a user                       with root ``R``
============ ======================= =============================== =====================
state_dir    ``/var/lib/bkcore``     ``$XDG_DATA_HOME/bkcore``       ``R``
config_dir   ``/etc/bkcore``         ``$XDG_CONFIG_HOME/bkcore``     ``R/config``
runtime_dir  ``/run/bkcore``         ``$XDG_RUNTIME_DIR/bkcore``     ``R/run``
============ ======================= =============================== =====================

A root is chosen by ``bkcore --root R`` (:func:`set_root`), else by the ``BKCORE_ROOT``
environment variable. Nothing here creates directories: callers ``mkdir`` what they use.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "bkcore"
ROOT_ENV = "BKCORE_ROOT"

_root_override: Path | None = None


def set_root(root: str | os.PathLike[str] | None) -> None:
    """Put every bkcore directory under ``root`` (``None`` goes back to the defaults)."""
    global _root_override
    _root_override = Path(root).absolute() if root is not None else None


def root() -> Path | None:
    """The chosen root (``--root``, then ``BKCORE_ROOT``), or ``None`` for the defaults."""
    if _root_override is not None:
        return _root_override
    value = os.environ.get(ROOT_ENV)
    return Path(value).absolute() if value else None


def is_system() -> bool:
    """True when bkcore runs as root and so uses the system directories."""
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def state_dir() -> Path:
    """Cache, content store, snapshots and metadata database live here."""
    chosen = root()
    if chosen is not None:
        return chosen
    if is_system():
        if sys.platform.startswith("linux"):
            return Path("/var/lib") / APP_NAME
        import platformdirs

        return Path(platformdirs.site_data_dir(APP_NAME))
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


def config_dir() -> Path:
    """Configuration files (read-only for bkcore)."""
    chosen = root()
    if chosen is not None:
        return chosen / "config"
    if is_system():
        if sys.platform.startswith("linux"):
            return Path("/etc") / APP_NAME
        import platformdirs

        return Path(platformdirs.site_config_dir(APP_NAME))
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME))


def runtime_dir() -> Path:
    """Sockets, lock files and other files that must not survive a reboot."""
    chosen = root()
    if chosen is not None:
        return chosen / "run"
    if is_system():
        if sys.platform.startswith("linux"):
            return Path("/run") / APP_NAME
        import platformdirs

        return Path(platformdirs.site_runtime_dir(APP_NAME))
    import platformdirs

    return Path(platformdirs.user_runtime_dir(APP_NAME))


def registry_config_file() -> Path:
    """The registry hosts file (``[registry."host"]`` tables): ``config_dir()/registries.toml``."""
    return config_dir() / "registries.toml"


def daemon_socket() -> Path:
    """The daemon's default unix socket: ``runtime_dir()/bkcore.sock`` (root: /run/bkcore)."""
    return runtime_dir() / "bkcore.sock"


def daemon_config_file() -> Path:
    """The daemon's default TOML config: ``config_dir()/bkcored.toml``."""
    return config_dir() / "bkcored.toml"
