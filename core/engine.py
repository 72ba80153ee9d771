"""The running parts of one bkcore instance, handed to op adapters, sources and exporters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bkcore.cache.store import CacheStore
    from bkcore.pluginmanager import BkPluginManager
    from bkcore.session.manager import SessionManager
    from bkcore.worker import Worker


@dataclass
class Engine:
    """Store, worker, sessions and plugins; one per embedded build or daemon."""

    store: CacheStore
    worker: Worker
    sessions: SessionManager
    plugins: BkPluginManager
    platform: str = "linux/amd64"
