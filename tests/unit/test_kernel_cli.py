"""The bkcore CLI skeleton: global options, plugin-provided commands, errors, exit codes."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from bkcore import config
from bkcore.cli.main import main, prescan
from bkcore.pluginmanager import reset_plugin_managers

HELLO_PLUGIN = """
import argparse
import sys

from bkcore import config
from bkcore.errors import SourceError
from bkcore.hookspecs import hookimpl


@hookimpl
def bkcore_register_commands(registry):
    registry.add("hello", "kernel_cli_hello:Hello", description="greet someone")
    registry.add("fail", "kernel_cli_hello:Fail", description="fail on purpose")
    registry.add("where", "kernel_cli_hello:Where", description="print the state dir")


@hookimpl
def bkcore_register_sources(registry):
    registry.add("example", "kernel_cli_hello:Hello")


class Hello:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--name", default="world")

    @staticmethod
    def run(args):
        print(f"hello {args.name} plugins={list(args.plugins)} debug={args.debug}")
        return 0


class Fail:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("how", choices=["bk", "interrupt", "bug", "status"])

    @staticmethod
    def run(args):
        if args.how == "bk":
            raise SourceError("cannot fetch example://x")
        if args.how == "interrupt":
            raise KeyboardInterrupt
        if args.how == "bug":
            raise ZeroDivisionError("oops")
        return 3


class Where:
    @staticmethod
    def add_arguments(parser):
        pass

    @staticmethod
    def run(args):
        print(config.state_dir())
        return 0
"""

GROUP_CLASH_PLUGIN = """
from bkcore.hookspecs import hookimpl

@hookimpl
def bkcore_register_commands(registry):
    registry.add("debug", "json", description="clashes with the debug group")
"""


@pytest.fixture(autouse=True)
def _plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    (tmp_path / "kernel_cli_hello.py").write_text(HELLO_PLUGIN)
    (tmp_path / "kernel_cli_clash.py").write_text(GROUP_CLASH_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(config.ROOT_ENV, raising=False)
    reset_plugin_managers()
    yield
    reset_plugin_managers()
    config.set_root(None)
    for name in ("kernel_cli_hello", "kernel_cli_clash"):
        sys.modules.pop(name, None)


def test_help_lists_commands_without_importing_them(capsys: pytest.CaptureFixture[str]) -> None:
    sys.modules.pop("bkcore.cli.plugins_cmd", None)
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "plugins" in out and "list loaded plugins and what each registered" in out
    assert "debug" in out and "--plugin MODULE[,MODULE]" in out
    assert "bkcore.cli.plugins_cmd" not in sys.modules


def test_plugins_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bkcore.cli.plugin (builtin, bkcore ")
    line = next(x for x in out.splitlines() if x.startswith("  commands: "))
    assert {"plugins", "debug dump-llb"} <= set(line.removeprefix("  commands: ").split(", "))


def test_plugins_json_with_a_cli_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--plugin", "kernel_cli_hello", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in doc["plugins"]}
    builtin = by_name["bkcore.cli.plugin"]
    assert builtin["origin"] == "builtin"
    keys = [c["key"] for c in builtin["registered"]["commands"]]
    assert keys[0] == "plugins" and "debug dump-llb" in keys
    hello = by_name["kernel_cli_hello"]
    assert hello["origin"] == "--plugin"
    assert hello["registered"]["sources"] == [
        {"key": "example", "target": "kernel_cli_hello:Hello", "description": ""}
    ]
    assert [c["key"] for c in hello["registered"]["commands"]] == ["hello", "fail", "where"]
    assert doc["plugins"][-1]["name"] == "kernel_cli_hello"


@pytest.mark.parametrize(
    "argv",
    [
        ["--plugin", "kernel_cli_hello", "hello", "--name", "ada"],
        ["hello", "--name", "ada", "--plugin=kernel_cli_hello"],
        ["hello", "--plugin", "kernel_cli_hello,", "--name=ada", "--plugin", "kernel_cli_hello"],
    ],
)
def test_plugin_option_before_or_after_the_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out == "hello ada plugins=['kernel_cli_hello'] debug=False\n"


def test_plugin_is_loaded_for_one_invocation_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin", "kernel_cli_hello", "hello"]) == 0
    capsys.readouterr()
    assert main(["hello"]) == 2
    assert "invalid choice: 'hello'" in capsys.readouterr().err


def test_bk_error_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin", "kernel_cli_hello", "fail", "bk"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: cannot fetch example://x\n"


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin", "kernel_cli_hello", "fail", "bk", "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "SourceError" in err and err.endswith("error: cannot fetch example://x\n")


def test_keyboard_interrupt_is_130(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin", "kernel_cli_hello", "fail", "interrupt"]) == 130


def test_unexpected_error_is_one_line_unless_debug(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin", "kernel_cli_hello", "fail", "bug"]) == 1
    err = capsys.readouterr().err
    assert err == "error: unexpected ZeroDivisionError: oops (run with --debug for the traceback)\n"
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "--plugin", "kernel_cli_hello", "fail", "bug"])


def test_command_status_is_the_exit_status() -> None:
    assert main(["--plugin", "kernel_cli_hello", "fail", "status"]) == 3


def test_missing_plugin_module_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin", "kernel_cli_nowhere", "plugins"]) == 1
    assert capsys.readouterr().err == (
        "error: plugin module 'kernel_cli_nowhere' not found (no installed distribution)\n"
    )


def test_command_clashing_with_a_group_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin", "kernel_cli_clash", "plugins"]) == 1
    assert "also used as a command group" in capsys.readouterr().err


def test_no_command_or_bare_group_prints_help_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    assert "usage: bkcore" in capsys.readouterr().err
    assert main(["debug"]) == 2
    err = capsys.readouterr().err
    assert "usage: bkcore debug" in err and "dump-llb" in err


def test_root_option_sets_the_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin", "kernel_cli_hello", "where", "--root", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r")


def test_dump_llb_adapter_passes_its_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str | None, bool]] = []

    def fake_run(file: str | None, dot: bool) -> int:
        calls.append((file, dot))
        return 5

    module = types.ModuleType("bkcore.cli.dump_llb")
    module.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bkcore.cli.dump_llb", module)
    assert main(["debug", "dump-llb", "--file", "def.pb", "--dot"]) == 5
    assert main(["debug", "dump-llb"]) == 5
    assert calls == [("def.pb", True), (None, False)]


def test_prescan_finds_globals_anywhere() -> None:
    found = prescan(["--plugin", "a,b", "build", "--debug", "--plugin=c", "--root", "/r", "ctx"])
    assert found.plugins == ["a,b", "c"]
    assert found.debug is True and found.root == "/r"
    assert found.words == ["build", "ctx"]
    assert prescan(["x", "--", "--debug"]).words == ["x", "--debug"]
    assert prescan(["x", "--", "--debug"]).debug is False
