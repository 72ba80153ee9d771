"""``bkcore build`` flag parsing: locals, outputs, secrets/ssh specs, progress modes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bkcore.cli import build_cmd
from bkcore.cli.build_cmd import UsageError, parse_args, parse_local, parse_output
from bkcore.controller import BuildOptions, OutputSpec, client_shared_key
from bkcore.errors import BkError


def test_locals_are_absolute_and_must_be_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "file").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert parse_local("src=src") == ("src", str(tmp_path / "src"))
    assert parse_local("ctx=.") == ("ctx", str(tmp_path))
    with pytest.raises(UsageError, match="expected NAME=DIR"):
        parse_local("src")
    with pytest.raises(UsageError, match="expected NAME=DIR"):
        parse_local("=src")
    with pytest.raises(UsageError, match="is not a directory"):
        parse_local("f=file")
    with pytest.raises(UsageError, match="is not a directory"):
        parse_local("m=missing")


def test_repeated_local_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="given twice"):
        parse_args(["--local", f"a={tmp_path}", "--local", f"a={tmp_path}"])


def test_output_local_and_tar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_output("type=local,dest=out") == OutputSpec(
        "local", {"dest": str(tmp_path / "out")}
    )
    assert parse_output("type=tar,dest=/x/a.tar") == OutputSpec("tar", {"dest": "/x/a.tar"})
    # CSV quoting like buildctl: a comma inside a quoted value.
    got = parse_output('type=local,"dest=a,b"')
    assert got.attrs["dest"] == str(tmp_path / "a,b")
    # Unknown types pass through with their attributes (exporter plugins validate them).
    assert parse_output("type=image,name=x,push=true") == OutputSpec(
        "image", {"name": "x", "push": "true"}
    )


def test_tar_to_stdout_unless_stdout_is_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeOut:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stdout", FakeOut(False))
    assert parse_output("type=tar,dest=-") == OutputSpec("tar", {"dest": "-"})
    assert parse_output("type=tar") == OutputSpec("tar", {"dest": "-"})
    monkeypatch.setattr(sys, "stdout", FakeOut(True))
    with pytest.raises(UsageError, match="terminal"):
        parse_output("type=tar")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("dest=out", "type is required"),
        ("type=local", "needs dest=DIR"),
        ("type=local,dest=-", "needs dest=DIR"),
        ("type=local,dest", "is not key=value"),
    ],
)
def test_bad_outputs(value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_output(value)


def test_full_command_line_becomes_build_options(tmp_path: Path) -> None:
    parsed = parse_args(
        [
            "--local", f"src={tmp_path}",
            "--local", f"ctx={tmp_path}",
            "--secret", "id=tok,env=TOKEN",
            "--secret", "id=key,src=key.txt",
            "--ssh", "default",
            "-o", f"type=local,dest={tmp_path}/out",
            "--no-cache",
            "--progress", "rawjson",
        ]
    )  # fmt: skip
    assert parsed.progress == "rawjson"
    opts = parsed.options(b"\x0a\x00")
    assert isinstance(opts, BuildOptions)
    assert opts.definition == b"\x0a\x00"
    assert opts.source == "<stdin>"
    assert dict(opts.locals) == {"src": str(tmp_path), "ctx": str(tmp_path)}
    assert list(opts.secrets) == ["id=tok,env=TOKEN", "id=key,src=key.txt"]
    assert list(opts.ssh) == ["default"]
    assert list(opts.outputs) == [OutputSpec("local", {"dest": f"{tmp_path}/out"})]
    assert opts.no_cache is True


def test_defaults() -> None:
    parsed = parse_args([])
    assert parsed.progress == "auto"
    opts = parsed.options(b"")
    assert (opts.locals, opts.secrets, opts.ssh, opts.outputs, opts.no_cache) == (
        {},
        (),
        (),
        (),
        False,
    )


def test_unknown_progress_mode_and_two_client_outputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown --progress 'fancy'"):
        parse_args(["--progress", "fancy"])
    with pytest.raises(UsageError, match="only one local or tar"):
        parse_args(["-o", f"type=local,dest={tmp_path}", "-o", f"type=tar,dest={tmp_path}/x"])


def test_usage_errors_are_bk_errors() -> None:
    # The kernel turns BkError into one `error:` line with status 1.
    assert issubclass(UsageError, BkError)


def test_shared_key_depends_on_the_absolute_directories(tmp_path: Path) -> None:
    a = client_shared_key({"src": str(tmp_path / "a")})
    assert a == client_shared_key({"src": str(tmp_path / "a")})
    assert a != client_shared_key({"src": str(tmp_path / "b")})
    assert a != client_shared_key({"ctx": str(tmp_path / "a")})
    assert len(a) == 32 and int(a, 16) >= 0


def test_definition_from_file_or_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "def.llb"
    f.write_bytes(b"abc")
    assert build_cmd._read_definition(str(f)) == b"abc"
    with pytest.raises(UsageError, match="cannot read the definition"):
        build_cmd._read_definition(os.fspath(tmp_path / "missing"))
