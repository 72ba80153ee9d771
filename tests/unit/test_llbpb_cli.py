"""`bkcore debug dump-llb` core: bkcore.cli.dump_llb.run."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from bkcore.cli.dump_llb import run

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"
LLB_FILES = sorted(VECTORS.glob("v*.llb"))


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("path", LLB_FILES, ids=lambda p: p.stem)
def test_file_prints_one_compact_json_object_per_op(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(str(path), dot=False) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.endswith("\n")
    lines = out.splitlines()
    expected = json.loads(path.with_suffix(".json").read_text())["dump_llb"]
    assert [json.loads(line) for line in lines] == expected
    for line in lines:
        # Go's json.Encoder: compact, struct field order, <>& escaped, UTF-8 kept.
        compact = json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False)
        for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            compact = compact.replace(ch, esc)
        assert line == compact
        assert line.startswith('{"Op":{')


def test_go_html_escaping_in_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(VECTORS / "v7_frontend_captured.llb"), dot=False) == 0
    out = capsys.readouterr().out
    assert "echo to-stdout \\u0026\\u0026 echo to-stderr \\u003e\\u00262" in out
    assert "&" not in out and ">" not in out


def test_stdin_and_dash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (VECTORS / "v1_scratch_mkfile.llb").read_bytes()
    _stdin(monkeypatch, data)
    assert run(None, dot=False) == 0
    from_stdin = capsys.readouterr().out
    _stdin(monkeypatch, data)
    assert run("-", dot=False) == 0
    assert capsys.readouterr().out == from_stdin
    assert run(str(VECTORS / "v1_scratch_mkfile.llb"), dot=False) == 0
    assert capsys.readouterr().out == from_stdin
    assert len(from_stdin.splitlines()) == 2


def test_dot(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(VECTORS / "v4_merge_diff.llb"), dot=True) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("digraph {\n") and out.endswith("}\n")
    assert out.count(" -> ") == 6  # inputs: exec 1, diff 2, merge 2, terminal 1
    assert '[label="merge" shape="invtriangle"];' in out


def test_truncated_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (VECTORS / "v6_dockerfile.llb").read_bytes()
    _stdin(monkeypatch, data[: len(data) // 2])
    assert run(None, dot=False) == 1
    out, err = capsys.readouterr()
    assert out == ""
    line = _one_error_line(err)
    assert line.startswith("error: <stdin>: truncated or corrupt LLB definition: ")


def test_empty_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _stdin(monkeypatch, b"")
    assert run(None, dot=True) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert _one_error_line(err) == "error: <stdin>: invalid LLB definition: it contains no ops"


@pytest.mark.parametrize("seed", range(50))
def test_random_garbage_file(seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(1000 + seed)
    path = tmp_path / "garbage.llb"
    path.write_bytes(rng.randbytes(rng.randint(1, 2000)))
    assert run(str(path), dot=seed % 2 == 0) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert _one_error_line(err).startswith(f"error: {path}: ")


@pytest.mark.parametrize("seed", range(100))
def test_corrupted_vectors_never_crash(
    seed: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(seed)
    data = bytearray(rng.choice(LLB_FILES).read_bytes())
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    _stdin(monkeypatch, bytes(data))
    code = run(None, dot=seed % 3 == 0)
    out, err = capsys.readouterr()
    if code == 0:
        assert err == "" and out
    else:
        assert code == 1 and out == ""
        _one_error_line(err)


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.llb"
    assert run(str(missing), dot=False) == 1
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: {missing}: No such file or directory"
    )
    assert run(str(tmp_path), dot=False) == 1
    assert _one_error_line(capsys.readouterr().err) == f"error: {tmp_path}: Is a directory"


class _BrokenPipe:
    """Stands in for sys.stdout and its .buffer when the reader has gone away."""

    def __init__(self) -> None:
        self.buffer = self

    def write(self, data: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        pass


def test_broken_stdout_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdout", _BrokenPipe())
    assert run(str(VECTORS / "v1_scratch_mkfile.llb"), dot=False) == 1
    assert _one_error_line(capsys.readouterr().err) == "error: <stdout>: Broken pipe"
