"""The built-in plugins of the local source, the exporters and the session attachables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bkcore.errors import SessionError
from bkcore.pluginmanager import BUILTIN_PLUGINS, BkPluginManager
from bkcore.plugins.exporters.local import LocalExporter
from bkcore.plugins.exporters.tar import TarExporter
from bkcore.session.filesync import DIFFCOPY, FILESEND
from bkcore.session.secrets import GETSECRET
from bkcore.session.sshforward import CHECK_AGENT
from bkcore.sessions.filesync import FileSendTarget, FileSyncProvider
from bkcore.sessions.secrets import SecretsProvider
from bkcore.sessions.sshforward import SSHProvider
from bkcore.sources.local.source import LocalSource

MINE = (
    "bkcore.sources.local.plugin",
    "bkcore.plugins.exporters.plugin",
    "bkcore.sessions.filesync.plugin",
    "bkcore.sessions.secrets.plugin",
    "bkcore.sessions.sshforward.plugin",
)


def _manager() -> BkPluginManager:
    manager = BkPluginManager()
    manager.load_builtins()
    return manager


def test_builtins_register_source_exporters_and_attachables() -> None:
    assert set(MINE) <= set(BUILTIN_PLUGINS)
    manager = _manager()
    assert manager.registry("sources").load("local") is LocalSource
    exporters = manager.registry("exporters")
    assert exporters.load("local") is LocalExporter and exporters.load("tar") is TarExporter
    attachables = manager.registry("attachables")
    assert attachables.load("filesync") is FileSyncProvider
    assert attachables.load("filesend") is FileSendTarget
    assert attachables.load("secrets") == SecretsProvider.from_specs
    assert attachables.load("ssh") == SSHProvider.from_specs
    for family, key in [("sources", "local"), ("exporters", "tar"), ("attachables", "ssh")]:
        entry = manager.registry(family).get(key)
        assert entry is not None and entry.plugin in MINE and entry.description


def test_attachable_factories_build_what_the_controller_asks_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attachables = _manager().registry("attachables")
    sync = attachables.load("filesync")({"context": str(tmp_path)})
    assert DIFFCOPY in sync.handlers()
    send = attachables.load("filesend")(dest_dir=str(tmp_path / "out"))
    assert FILESEND in send.handlers()
    (tmp_path / "tok").write_text("s3cr3t")
    secrets = attachables.load("secrets")([f"id=tok,src={tmp_path / 'tok'}", "id=e,env=HOME"])
    assert GETSECRET in secrets.handlers() and sorted(secrets.secrets) == ["e", "tok"]
    assert "s3cr3t" not in repr(secrets)
    with pytest.raises(SessionError, match="given twice"):
        attachables.load("secrets")(["id=a,src=x", "id=a,env=Y"])
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/agent.sock")
    ssh = attachables.load("ssh")(["default", f"other={tmp_path / 's.sock'}"])
    assert CHECK_AGENT in ssh.handlers()
    assert ssh._socket("") == "/run/agent.sock"
    assert ssh._socket("other") == os.path.join(tmp_path, "s.sock")
    with pytest.raises(SessionError, match="given twice"):
        attachables.load("ssh")(["default", "default=/x"])
