"""The daemon's config file in buildkitd.toml's spelling, its file:line errors, the GC
policies it yields, and the daemon's flags (repeatable --addr, --group, GC flags)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from bkcore.api import daemon
from bkcore.cache.gc import GCPolicy, default_cap, default_policies
from bkcore.cli import daemon_cmd
from bkcore.cli.main import _add_global_options


def test_buildkitd_toml_spelling(tmp_path: Path) -> None:
    file = tmp_path / "buildkitd.toml"
    file.write_text(
        """
debug = true
[history]
  maxAge = 3600
  maxEntries = 10
[grpc]
  address = ["unix:///tmp/a.sock", "tcp://127.0.0.1:1234"]
  uid = 0
  gid = 42
[worker.oci]
  enabled = true
  gc = true
  gckeepstorage = "2GB"
  max-parallelism = 2
  [[worker.oci.gcpolicy]]
    keepBytes = 512000000
    keepDuration = 172800
    filters = [ "type==source.local", "type==exec.cachemount"]
  [[worker.oci.gcpolicy]]
    all = true
    keepBytes = "1GiB"
"""
    )
    cfg = daemon.load_config(file, root=str(tmp_path))
    assert cfg.debug and cfg.gc and cfg.max_parallelism == 2
    assert cfg.addresses == ("unix:///tmp/a.sock", "tcp://127.0.0.1:1234")
    assert (cfg.socket_uid, cfg.socket_gid) == (0, 42)
    assert cfg.gc_keep_storage == 2_000_000_000
    assert (cfg.history_max_age, cfg.history_max_entries) == (3600.0, 10)
    assert daemon.gc_policies(cfg) == (
        GCPolicy(
            keep_duration=172800.0,
            keep_bytes=512_000_000,
            filters=("type==source.local", "type==exec.cachemount"),
        ),
        GCPolicy(all=True, keep_bytes=1 << 30),
    )


def test_default_policies_gc_off_and_keepstorage(tmp_path: Path) -> None:
    file = tmp_path / "d.toml"
    file.write_text("[worker.oci]\ngckeepstorage = 5000000\n")
    cfg = daemon.load_config(file, root=str(tmp_path))
    policies = daemon.gc_policies(cfg)
    assert policies == default_policies(tmp_path, 5_000_000)
    assert [p.keep_bytes for p in policies] == [512_000_000, 5_000_000, 5_000_000, 5_000_000]
    assert policies[0].keep_duration == 48 * 3600 and policies[-1].all
    # no gckeepstorage: 10% of the disk, rounded up to whole GB
    st = os.statvfs(tmp_path)
    cap = (st.f_frsize * st.f_blocks // 10 // (1 << 30) + 1) * 1_000_000_000
    assert default_cap(tmp_path) == cap
    assert daemon.gc_policies(daemon.DaemonConfig(root=tmp_path))[-1].keep_bytes == cap
    file.write_text("[worker.oci]\ngc = false\n[[worker.oci.gcpolicy]]\nkeepBytes = 1\n")
    assert daemon.gc_policies(daemon.load_config(file, root=str(tmp_path))) == ()
    file.write_text('[worker]\ngc-interval = "1h"\n')
    assert daemon.load_config(file, root=str(tmp_path)).gc_interval == 3600.0
    assert daemon.load_config(None, root=str(tmp_path)).gc_interval is None
    file.write_text('[worker.oci]\ngckeepstorage = "50%"\n')
    half = daemon.load_config(file, root=str(tmp_path)).gc_keep_storage
    assert half == st.f_frsize * st.f_blocks // 2


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("debug = true\nsnapshot = 1\n", 2, "unknown key 'snapshot' in the top level"),
        (
            "[worker.oci]\n  gc = true\n  snapshotter = 'auto'\n",
            3,
            "unknown key 'snapshotter' in [worker.oci] (known: enabled, max-parallelism",
        ),
        (
            "[worker.oci]\n[[worker.oci.gcpolicy]]\nkeepBytes = 1\n[[worker.oci.gcpolicy]]\n"
            "keepByte = 2\n",
            5,
            "unknown key 'keepByte' in [[worker.oci.gcpolicy]] #2",
        ),
        ("[worker.oci]\ngc = 'yes'\n", 2, "'gc' has the wrong type (str) in [worker.oci]"),
        ("[worker.oci]\n\ngckeepstorage = 'lots'\n", 3, "want bytes, a size like"),
        ("[worker]\nmax-parallelism = 2\n[worker.oci]\nmax-parallelism = 3\n", 4, "set in both"),
        ("[worker.oci]\nenabled = false\n", 2, "bkcore's only worker"),
        ("[grpc]\n\naddress = ['http://x']\n", 3, "unsupported address scheme 'http'"),
        ("[worker.containerd]\nenabled = true\n", 1, "unknown key 'containerd' in [worker]"),
        ("[[worker.oci.gcpolicy]]\nfilters = ['id~=(']\n", 2, "invalid filter"),
        ("[[worker.gcpolicy]]\nkeepDuration = -5\n", 2, "must not be negative"),
        ("[history]\nmaxAge = '2d'\nmaxEntry = 3\n", 3, "unknown key 'maxEntry' in [history]"),
        ("debug = true\n[grpc\n", 2, "invalid TOML: Expected ']' at the end of a table"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(daemon.DaemonConfigError) as info:
        daemon.load_config(file, root=str(tmp_path))
    got = str(info.value)
    assert got.startswith(f"{file}:{line}: "), got
    assert message in got and "\n" not in got, got


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _add_global_options(parser, suppress=True)
    daemon_cmd.add_arguments(parser)
    args = parser.parse_args(argv)
    args.addr = None
    args.root = None
    return args


def _with_manager(args: argparse.Namespace) -> argparse.Namespace:
    args.plugin_manager = None
    return args


def test_flags_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "d.toml"
    file.write_text("[grpc]\naddress = ['unix:///tmp/file.sock']\n[worker.oci]\ngc = false\n")
    seen: list[daemon.DaemonConfig] = []
    monkeypatch.setattr(daemon, "run", lambda cfg, plugins: seen.append(cfg) or 0)
    args = _parse(
        [
            "--config",
            str(file),
            "--addr",
            "unix:///tmp/one.sock",
            "--addr",
            "tcp://127.0.0.1:9",
            "--group",
            "0",
            "--oci-worker-gc",
            "true",
            "--oci-worker-gc-keepstorage",
            "7",
            "--debug",
        ]
    )
    args.plugin_manager = None
    assert daemon_cmd.run(args) == 0
    (cfg,) = seen
    assert cfg.addresses == ("unix:///tmp/one.sock", "tcp://127.0.0.1:9")
    assert cfg.socket_gid == 0 and cfg.gc and cfg.debug
    assert cfg.gc_keep_storage == 7_000_000
    # buildkitd's spellings of the boolean flag
    for flag, want in (("--oci-worker-gc", True), ("--oci-worker-gc=false", False)):
        seen.clear()
        daemon_cmd.run(_with_manager(_parse(["--config", str(file), flag])))
        assert seen[0].gc is want
    args = _parse(["--config", str(file), "--group", "no-such-group-xyz"])
    with pytest.raises(daemon.DaemonConfigError, match="no group named 'no-such-group-xyz'"):
        daemon_cmd.run(args)


def test_socket_group_is_set(tmp_path: Path) -> None:
    gid = os.getgid()
    sock = daemon._bind_unix(str(tmp_path / "s.sock"), None, gid)
    try:
        st = os.stat(tmp_path / "s.sock")
        assert st.st_gid == gid and st.st_mode & 0o777 == 0o660
    finally:
        sock.close()
