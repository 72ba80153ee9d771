"""`bkcore build` frontend forms: buildctl's (--frontend/--opt) and docker's (PATH, -t, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bkcore.cli.build_cmd import UsageError, parse_args
from bkcore.controller import OutputSpec


def test_buildctl_form(tmp_path: Path) -> None:
    parsed = parse_args(
        [
            "--frontend", "dockerfile.v0",
            "--local", f"context={tmp_path}",
            "--local", f"dockerfile={tmp_path}",
            "--opt", "target=app",
            "--opt", "build-arg:K=V=W",
            "--opt", "no-cache=",
            "--output", f"type=local,dest={tmp_path}/out",
        ]
    )  # fmt: skip
    options = parsed.options()
    assert options.frontend == "dockerfile.v0"
    assert options.frontend_opts == {"target": "app", "build-arg:K": "V=W", "no-cache": ""}
    assert options.locals == {"context": str(tmp_path), "dockerfile": str(tmp_path)}
    assert options.outputs == (OutputSpec("local", {"dest": f"{tmp_path}/out"}),)
    assert options.definition == b""


def test_no_cache_flag_becomes_the_frontend_option_too(tmp_path: Path) -> None:
    parsed = parse_args(["--frontend", "x.v0", "--no-cache"])
    assert parsed.options().no_cache
    assert parsed.options().frontend_opts == {"no-cache": ""}
    raw = parse_args(["--no-cache"]).options()
    assert raw.frontend == "" and raw.frontend_opts == {}


def test_short_form_maps_to_the_frontend_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    monkeypatch.setenv("FROM_ENV", "e")
    monkeypatch.delenv("UNSET_ARG", raising=False)
    parsed = parse_args(
        [
            "--target", "Build",
            "--build-arg", "A=1",
            "--build-arg", "FROM_ENV",
            "--build-arg", "UNSET_ARG",
            "--platform", "linux/amd64,linux/arm64",
            "--platform", "linux/arm/v7",
            "-o", str(tmp_path / "out"),
            str(ctx),
        ]
    )  # fmt: skip
    options = parsed.options()
    assert options.frontend == "dockerfile.v0"
    assert options.locals == {"context": str(ctx), "dockerfile": str(ctx)}
    assert options.frontend_opts == {
        "target": "Build",
        "build-arg:A": "1",
        "build-arg:FROM_ENV": "e",
        "platform": "linux/amd64,linux/arm64,linux/arm/v7",
    }
    assert options.outputs == (OutputSpec("local", {"dest": str(tmp_path / "out")}),)


def test_short_form_dockerfile_elsewhere(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    other = tmp_path / "files"
    other.mkdir()
    (other / "app.Dockerfile").write_text("FROM scratch\n")
    options = parse_args(["-f", str(other / "app.Dockerfile"), str(ctx)]).options()
    assert options.locals == {"context": str(ctx), "dockerfile": str(other)}
    assert options.frontend_opts == {"filename": "app.Dockerfile"}
    assert options.source == "<stdin>"  # -f named the Dockerfile, not a definition
    with pytest.raises(UsageError, match="no such Dockerfile"):
        parse_args(["-f", str(other / "missing"), str(ctx)])


def test_tags_and_push_make_an_image_output(tmp_path: Path) -> None:
    options = parse_args(
        ["-t", "127.0.0.1:5000/a:1", "-t", "127.0.0.1:5000/a:2", "--push", str(tmp_path)]
    ).options()
    assert options.outputs == (
        OutputSpec("image", {"name": "127.0.0.1:5000/a:1,127.0.0.1:5000/a:2", "push": "true"}),
    )
    named = parse_args(["-t", "r/x", "-o", "type=image,compression=zstd", str(tmp_path)])
    assert named.options().outputs == (OutputSpec("image", {"compression": "zstd", "name": "r/x"}),)
    with pytest.raises(UsageError, match="--push needs -t"):
        parse_args(["--push", str(tmp_path)])


def test_no_output_and_no_tag_builds_only(tmp_path: Path) -> None:
    assert parse_args([str(tmp_path)]).options().outputs == ()


def test_dash_output_is_a_tar_on_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NotATerminal:
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr("sys.stdout", NotATerminal())
    assert parse_args(["-o", "-", str(tmp_path)]).options().outputs == (
        OutputSpec("tar", {"dest": "-"}),
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "x"], "needs a build context PATH"),
        (["-t", "r/x"], "needs a build context PATH"),
        (["/nonexistent-dir-bkcore"], "is not a directory"),
        (["--opt", "=v", "--frontend", "f"], "expected KEY=VALUE"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


def test_context_path_conflicting_with_a_local(tmp_path: Path) -> None:
    other = tmp_path / "o"
    other.mkdir()
    with pytest.raises(UsageError, match="conflicts"):
        parse_args(["--local", f"context={other}", str(tmp_path)])
    with pytest.raises(UsageError, match=r"dockerfile\.v0 only"):
        parse_args(["--frontend", "gateway.v0", str(tmp_path)])
