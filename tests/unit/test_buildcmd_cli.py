"""``bkcore build`` through the kernel CLI, in-process: errors, progress modes, cache reuse.

Uses vector v1 (``mkfile /hello.txt`` on scratch): no container runtime is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bkcore.cli.main import main

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
V1 = VECTORS / "v1_scratch_mkfile.llb"


def build(root: Path, *args: str) -> int:
    return main(["--root", str(root), "build", "--file", str(V1), *args])


def test_unknown_progress_mode_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build(tmp_path, "--progress", "fancy") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown --progress 'fancy'")
    assert err.count("\n") == 1


def test_corrupt_definition_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.llb"
    bad.write_bytes(V1.read_bytes()[:-7])
    status = main(["--root", str(tmp_path / "root"), "build", "--file", str(bad)])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: ")
    assert err.count("\n") == 1


def test_plain_build_then_cached_rebuild(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build(tmp_path, "--progress", "plain") == 0
    first = capsys.readouterr().err.splitlines()
    assert first[0] == "#1 mkfile /hello.txt"
    assert first[-1].startswith("#1 DONE ")
    # A second process-level run finds the result in the persistent cache.
    assert build(tmp_path, "--progress", "plain") == 0
    assert capsys.readouterr().err.splitlines() == ["#1 mkfile /hello.txt", "#1 CACHED"]
    # --no-cache runs it again.
    assert build(tmp_path, "--progress", "plain", "--no-cache") == 0
    assert capsys.readouterr().err.splitlines()[-1].startswith("#1 DONE ")


def test_rawjson_progress_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build(tmp_path, "--progress", "rawjson") == 0
    objs = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    vertexes = [o["vertexes"][0] for o in objs if "vertexes" in o]
    assert vertexes[0]["name"] == "mkfile /hello.txt" and "started" not in vertexes[0]
    assert "completed" in vertexes[-1] and "error" not in vertexes[-1]


def test_auto_progress_is_plain_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build(tmp_path) == 0
    assert capsys.readouterr().err.startswith("#1 mkfile /hello.txt\n")
