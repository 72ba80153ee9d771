"""``bkcore --addr ... build``: what the client adds to ``Control.Solve`` so a daemon build
matches the embedded one (the client's SOURCE_DATE_EPOCH reaches the image exporters)."""

from __future__ import annotations

from bkcore import llb
from bkcore.api import buildclient
from bkcore.controller import BuildOptions, OutputSpec

DATA = llb.scratch().file(llb.mkfile("/f", 0o644, b"x")).marshal().to_bytes()
ENV = {"SOURCE_DATE_EPOCH": "1000000000"}


def attrs(output: OutputSpec, env: dict[str, str], **options: object) -> dict[str, str]:
    request = buildclient.solve_request(
        BuildOptions(definition=DATA, outputs=(output,), **options),  # type: ignore[arg-type]
        "ref",
        "sess",
        environ=env,
    )
    return dict(request.exporter_attrs)


def test_source_date_epoch_of_the_client_reaches_image_exporters() -> None:
    for kind in ("image", "oci", "docker"):
        got = attrs(OutputSpec(kind, {"dest": "/x"}), ENV)
        assert got == {"dest": "/x", "source-date-epoch": "1000000000"}, kind


def test_other_exporters_and_an_unset_variable_get_nothing() -> None:
    assert attrs(OutputSpec("local", {"dest": "/x"}), ENV) == {"dest": "/x"}
    assert attrs(OutputSpec("tar", {"dest": "/x"}), ENV) == {"dest": "/x"}
    assert attrs(OutputSpec("oci", {"dest": "/x"}), {}) == {"dest": "/x"}
    assert attrs(OutputSpec("oci", {"dest": "/x"}), {"SOURCE_DATE_EPOCH": ""}) == {"dest": "/x"}


def test_an_explicit_attr_or_build_arg_wins_over_the_environment() -> None:
    explicit = attrs(OutputSpec("oci", {"dest": "/x", "source-date-epoch": "5"}), ENV)
    assert explicit["source-date-epoch"] == "5"
    by_arg = attrs(
        OutputSpec("oci", {"dest": "/x"}),
        ENV,
        frontend="dockerfile.v0",
        frontend_opts={"build-arg:SOURCE_DATE_EPOCH": "7"},
    )
    assert "source-date-epoch" not in by_arg
