"""config: system dirs as root, user dirs otherwise, --root / BKCORE_ROOT override."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bkcore import config


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(config.ROOT_ENV, raising=False)
    config.set_root(None)
    yield
    config.set_root(None)


def test_system_dirs_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sys, "platform", "linux")
    assert config.is_system()
    assert config.state_dir() == Path("/var/lib/bkcore")
    assert config.config_dir() == Path("/etc/bkcore")
    assert config.runtime_dir() == Path("/run/bkcore")


def test_user_dirs_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "conf"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert not config.is_system()
    assert config.state_dir() == tmp_path / "data" / "bkcore"
    assert config.config_dir() == tmp_path / "conf" / "bkcore"
    assert config.runtime_dir() == tmp_path / "run" / "bkcore"


def test_env_root_then_set_root_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.ROOT_ENV, str(tmp_path / "env"))
    assert config.root() == tmp_path / "env"
    assert config.state_dir() == tmp_path / "env"
    assert config.config_dir() == tmp_path / "env" / "config"
    assert config.runtime_dir() == tmp_path / "env" / "run"
    config.set_root(tmp_path / "cli")
    assert config.state_dir() == tmp_path / "cli"
    config.set_root(None)
    assert config.state_dir() == tmp_path / "env"


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config.set_root("rel")
    assert config.state_dir() == tmp_path / "rel"
    assert not (tmp_path / "rel").exists()  # nothing is created


def test_only_config_imports_platformdirs() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("core", "sources", "frontends", "workers", "sessions", "plugins"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8", errors="replace")
            if ("import platformdirs" in text or "from platformdirs" in text) and path != (
                root / "core" / "config.py"
            ):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_importing_config_does_not_import_platformdirs() -> None:
    code = "import sys, bkcore.config; print('platformdirs' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
