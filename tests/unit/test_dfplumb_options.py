"""dockerfile.v0 frontend options (spec/gateway.md §4) and the error snippet."""

from __future__ import annotations

import pytest

from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile.frontend import (
    normalize_platform,
    parse_frontend_options,
    snippet,
)


def test_defaults() -> None:
    o = parse_frontend_options({})
    assert o.filename == "Dockerfile"
    assert o.context_key == "context" and o.dockerfile_key == "dockerfile"
    assert o.ignore_cache is False and o.platforms == () and not o.multi_platform
    assert o.source_date_epoch is None and o.image_resolve_mode == "default"


def test_prefixed_options_are_collected() -> None:
    o = parse_frontend_options(
        {
            "build-arg:A": "1",
            "build-arg:EMPTY": "",
            "label:org.x": "y",
            "context:base": "docker-image://busybox",
            "target": "Final",
            "filename": "sub/Build.df",
        }
    )
    assert o.build_args == {"A": "1", "EMPTY": ""}
    assert o.labels == {"org.x": "y"}
    assert o.named_contexts == {"base": "docker-image://busybox"}
    assert o.target == "Final"
    assert o.filename == "sub/Build.df"


def test_no_cache_all_or_listed_stages() -> None:
    assert parse_frontend_options({"no-cache": ""}).ignore_cache is True
    assert parse_frontend_options({"no-cache": "Build, test"}).ignore_cache == frozenset(
        {"build", "test"}
    )


def test_platforms_are_normalised_and_several_make_a_map() -> None:
    o = parse_frontend_options({"platform": "linux/x86_64,linux/arm64/v8"})
    assert o.platforms == ("linux/amd64", "linux/arm64")
    one = parse_frontend_options({"platform": "linux/amd64", "multi-platform": "true"})
    assert one.multi_platform
    by_arg = parse_frontend_options({"build-arg:BUILDKIT_MULTI_PLATFORM": "1"})
    assert by_arg.multi_platform
    assert normalize_platform("linux/arm") == "linux/arm/v7"


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"platform": "linux"}, "invalid platform"),
        ({"override-copy-image": "x"}, "removed"),
        ({"build-arg:BUILDKIT_DISABLE_FILEOP": "1"}, "removed"),
        ({"force-network-mode": "bridge"}, "force-network-mode"),
        ({"image-resolve-mode": "never"}, "image-resolve-mode"),
        ({"shm-size": "1g"}, "shm-size"),
        ({"ulimit": "nofile=a:b"}, "ulimit"),
        ({"add-hosts": "justhost"}, "add-hosts"),
        ({"build-arg:SOURCE_DATE_EPOCH": "yesterday"}, "SOURCE_DATE_EPOCH"),
        ({"context": "https://example.com/repo.git"}, "remote build contexts"),
        ({"requestid": "frontend.outline"}, "unsupported request"),
        (
            {"frontend.caps": "moby.buildkit.frontend.subrequests"},
            "unsupported frontend capability moby.buildkit.frontend.subrequests",
        ),
    ],
)
def test_bad_options_are_frontend_errors(opts: dict[str, str], message: str) -> None:
    with pytest.raises(FrontendError, match=message):
        parse_frontend_options(opts)


def test_runtime_options() -> None:
    o = parse_frontend_options(
        {
            "add-hosts": "a=1.2.3.4,b:5.6.7.8",
            "ulimit": "nofile=1024:2048,nproc=10",
            "shm-size": "65536",
            "force-network-mode": "none",
            "hostname": "box",
            "cgroup-parent": "/cg",
            "build-arg:BUILDKIT_CACHE_MOUNT_NS": "ns",
            "build-arg:SOURCE_DATE_EPOCH": "1700000000",
            "contextkey": "ctx",
            "dockerfilekey": "df",
        }
    )
    assert o.extra_hosts == (("a", "1.2.3.4"), ("b", "5.6.7.8"))
    assert o.ulimits == (("nofile", 1024, 2048), ("nproc", 10, 10))
    assert o.shm_size == 65536 and o.force_network == "none" and o.hostname == "box"
    assert o.cgroup_parent == "/cg" and o.cache_mount_ns == "ns"
    assert o.source_date_epoch == 1700000000
    assert o.context_key == "ctx" and o.dockerfile_key == "df"


def test_snippet_marks_the_offending_lines() -> None:
    text = "FROM a\nARG X\nRUN false\nRUN \\\n  more\nCMD x\n"
    assert snippet(text, 3) == [
        "Dockerfile:3",
        "--------------------",
        " 1 |     FROM a",
        " 2 |     ARG X",
        " 3 | >>> RUN false",
        " 4 |     RUN \\",
        " 5 |       more",
        "--------------------",
    ]
    multi = snippet(text, 4, end_line=5, filename="Build.df")
    assert multi[0] == "Build.df:4-5"
    assert " 4 | >>> RUN \\" in multi and " 5 | >>>   more" in multi
    assert snippet(text, 0) == [] and snippet(text, 99) == []


def test_supported_frontend_caps_are_accepted() -> None:
    parse_frontend_options(
        {"frontend.caps": "moby.buildkit.frontend.inputs,moby.buildkit.frontend.contexts+forward"}
    )
