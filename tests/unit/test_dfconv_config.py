"""Dockerfile converter: the image config and history each instruction writes (BuildKit v0.11
results; the cases mirror conformance categories env, metadata, cmd, onbuild, workdir, user)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import betterproto
import pytest

from bkcore import llb
from bkcore.frontends.dockerfile.convert import ConvertOptions, ConvertResult, dockerfile_to_llb
from bkcore.frontends.dockerfile.convert.dispatch import go_duration, parse_port_specs
from bkcore.frontends.dockerfile.convert.image import marshal_image, parse_image
from bkcore.llb import pb

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "docker.io/library/busybox:latest"
DIGEST = "sha256:" + "ab" * 32


class FakeBridge:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    async def resolve_image_config(
        self, ref: str, *, platform: str | None = None, resolve_mode: str = "default"
    ) -> tuple[str, bytes]:
        return DIGEST, json.dumps(self.config).encode()


def base(**config: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"Env": [f"PATH={PATH}"], "Cmd": ["sh"]}
    cfg.update(config)
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": "2000-01-01T00:00:00Z",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
        "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "base"}],
    }


def convert(dockerfile: str, config: dict[str, Any] | None = None, **kw: Any) -> ConvertResult:
    kw.setdefault("build_platforms", ["linux/amd64"])
    bridge = FakeBridge(config if config is not None else base())
    return asyncio.run(dockerfile_to_llb(dockerfile.encode(), ConvertOptions(**kw), bridge))  # type: ignore[arg-type]


def cfg(res: ConvertResult) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(res.config_json())["config"]
    return out


def history(res: ConvertResult) -> list[tuple[str, bool]]:
    hist = json.loads(res.config_json())["history"]
    return [(h["created_by"], bool(h.get("empty_layer"))) for h in hist[1:]]


def file_ops(res: ConvertResult) -> list[tuple[pb.FileOp, pb.OpMetadata]]:
    defn = res.state.marshal(platform=res.platform)
    out = []
    for dg, raw in zip(defn.digests[:-1], defn.ops[:-1], strict=True):
        op = pb.Op().parse(raw)
        _kind, body = betterproto.which_one_of(op, "op")
        if isinstance(body, pb.FileOp):
            out.append((body, defn.metadata[dg]))
    return out


def test_env_order_replacement_and_same_instruction_references() -> None:
    res = convert("FROM busybox\nENV A=1 B=${A}x\nENV A=2 PATH=/p:$PATH\nENV K  v  w\n")
    assert cfg(res)["Env"] == [f"PATH=/p:{PATH}", "A=2", "B=x", "K=v  w"]
    assert history(res) == [
        ("ENV A=1 B=x", True),
        (f"ENV A=2 PATH=/p:{PATH}", True),
        ("ENV K=v  w", True),
    ]


def test_config_json_field_order_and_onbuild_null_like_go() -> None:
    res = convert('FROM busybox\nCMD ["a", "<b>"]\nLABEL z=1 a=2\n')
    text = res.config_json().decode()
    assert text.index('"Env"') < text.index('"Cmd"') < text.index('"Labels"')
    assert '"ArgsEscaped":true,"OnBuild":null' in text
    assert '"Labels":{"a":"2","z":"1"}' in text
    assert "\\u003cb\\u003e" in text  # Go escapes < and >
    assert "created" not in json.loads(text)  # the base image's time is dropped


def test_labels_inherit_override_and_label_options() -> None:
    df = 'FROM busybox AS a\nLABEL x=1 "y z"=2\nFROM a\nLABEL x=3\n'
    res = convert(df, labels={"opt": "o", "x": "from-opt"})
    assert cfg(res)["Labels"] == {"x": "from-opt", "y z": "2", "opt": "o"}


def test_expose_ranges_protocols_duplicates_and_expansion() -> None:
    res = convert("FROM busybox\nENV P=8080\nEXPOSE 80 $P/tcp 7000-7002/udp 9090/SCTP 80/tcp\n")
    assert list(cfg(res)["ExposedPorts"]) == [
        "7000/udp",
        "7001/udp",
        "7002/udp",
        "80/tcp",
        "8080/tcp",
        "9090/sctp",
    ]
    assert history(res)[-1][0].startswith("EXPOSE map[7000/udp:{} ")
    assert parse_port_specs(["127.0.0.1:8000:80"]) == ["80/tcp"]
    assert parse_port_specs(["[::1]:8080:80/udp", "1000-1001:2000-2001"]) == [
        "2000/tcp",
        "2001/tcp",
        "80/udp",
    ]
    with pytest.raises(ValueError, match="invalid proto: foo"):
        parse_port_specs(["80/foo"])


def test_volume_user_stopsignal_shell_and_maintainer() -> None:
    df = (
        'FROM busybox\nVOLUME /cache/ /data\nVOLUME ["/j"]\nUSER app:staff\n'
        'STOPSIGNAL SIGUSR1\nSHELL ["/bin/bash", "-c"]\nMAINTAINER me <me@x>\n'
    )
    res = convert(df)
    c = cfg(res)
    assert c["Volumes"] == {"/cache/": {}, "/data": {}, "/j": {}}
    assert c["User"] == "app:staff"
    assert c["StopSignal"] == "SIGUSR1"
    assert c["Shell"] == ["/bin/bash", "-c"]
    assert json.loads(res.config_json())["author"] == "me <me@x>"
    assert [h for h, _ in history(res)] == [
        "VOLUME [/cache/ /data]",
        "VOLUME [/j]",
        "USER app:staff",
        "STOPSIGNAL SIGUSR1",
        "SHELL [/bin/bash -c]",
        "MAINTAINER me <me@x>",
    ]


def test_cmd_entrypoint_interplay_and_shell() -> None:
    base_cfg = base(Cmd=["base-cmd"], Entrypoint=["/bin/echo"])
    # ENTRYPOINT resets an inherited CMD ...
    res = convert('FROM busybox\nENTRYPOINT ["/bin/printf"]\n', base_cfg)
    assert "Cmd" not in cfg(res) and cfg(res)["Entrypoint"] == ["/bin/printf"]
    # ... but not a CMD set earlier in the same stage
    res = convert('FROM busybox\nCMD ["x"]\nENTRYPOINT ["/bin/printf"]\n', base_cfg)
    assert cfg(res)["Cmd"] == ["x"]
    # across stages: the child's ENTRYPOINT resets the parent's CMD
    res = convert('FROM busybox AS p\nCMD ["x"]\nFROM p\nENTRYPOINT ["e"]\n', base_cfg)
    assert "Cmd" not in cfg(res)
    # shell forms use SHELL
    res = convert('FROM busybox\nSHELL ["/bin/ash", "-eo"]\nCMD echo "$HOME" hi\nENTRYPOINT ep x\n')
    assert cfg(res)["Cmd"] == ["/bin/ash", "-eo", 'echo "$HOME" hi']
    assert cfg(res)["Entrypoint"] == ["/bin/ash", "-eo", "ep x"]
    assert history(res)[1][0] == 'CMD ["/bin/ash" "-eo" "echo \\"$HOME\\" hi"]'


def test_healthcheck_replaces_the_inherited_one_and_ignores_shell() -> None:
    hc = {"Test": ["CMD", "old"], "Interval": 1, "Retries": 9}
    res = convert(
        'FROM busybox\nSHELL ["/bin/ash", "-c"]\nHEALTHCHECK --timeout=3s CMD curl -f x\n',
        base(Healthcheck=hc),
    )
    assert cfg(res)["Healthcheck"] == {"Test": ["CMD-SHELL", "curl -f x"], "Timeout": 3_000_000_000}
    assert history(res)[-1][0] == (
        'HEALTHCHECK &{["CMD-SHELL" "curl -f x"] "0s" "3s" "0s" \'\\x00\'}'
    )
    res = convert("FROM busybox\nHEALTHCHECK NONE\n", base(Healthcheck=hc))
    assert cfg(res)["Healthcheck"] == {"Test": ["NONE"]}


def test_go_duration_strings() -> None:
    assert go_duration(0) == "0s"
    assert go_duration(90 * 10**9) == "1m30s"
    assert go_duration(3600 * 10**9 + 1) == "1h0m0.000000001s"
    assert go_duration(1_500_000) == "1.5ms"


def test_onbuild_stored_verbatim_then_run_in_the_child_and_cleared() -> None:
    df = (
        "FROM busybox AS parent\n"
        "WORKDIR /w\n"
        "ONBUILD   ENV   FROM_TRIGGER=yes\n"
        'ONBUILD RUN echo "in child"\n'
        "FROM parent\n"
        "RUN echo own\n"
    )
    parent = convert(df, target="parent")
    assert cfg(parent)["OnBuild"] == ["ENV   FROM_TRIGGER=yes", 'RUN echo "in child"']
    child = convert(df)
    c = cfg(child)
    assert c["OnBuild"] is None
    assert "FROM_TRIGGER=yes" in c["Env"]
    defn = child.state.marshal(platform=child.platform)
    execs = []
    for raw in defn.ops[:-1]:
        _kind, body = betterproto.which_one_of(pb.Op().parse(raw), "op")
        if isinstance(body, pb.ExecOp):
            execs.append(body)
    # the trigger runs first, with the parent's WORKDIR and the trigger's ENV
    assert [e.meta.args[-1] for e in execs] == ['echo "in child"', "echo own"]
    assert execs[0].meta.cwd == "/w"
    assert "FROM_TRIGGER=yes" in execs[0].meta.env


def test_onbuild_triggers_of_a_base_image_run() -> None:
    res = convert("FROM busybox\nRUN echo mine\n", base(OnBuild=["ENV T=1"]))
    assert "T=1" in cfg(res)["Env"] and cfg(res)["OnBuild"] is None


def test_workdir_relative_clean_mkdir_owned_by_user_and_layers() -> None:
    df = "FROM busybox\nUSER app\nWORKDIR /a\nENV D=b\nWORKDIR ./$D/../c\nWORKDIR /\n"
    res = convert(df)
    assert cfg(res)["WorkingDir"] == "/"
    mk = file_ops(res)
    assert len(mk) == 2  # WORKDIR / makes no op
    action = mk[1][0].actions[0].mkdir
    assert action.path == "/a/c" and action.make_parents and action.mode == 0o755
    assert action.owner.user.by_name.name == "app"
    assert mk[1][1].description[llb.CUSTOM_NAME] == "[3/4] WORKDIR ./b/../c"
    assert history(res)[1:] == [
        ("WORKDIR /a", False),
        ("ENV D=b", True),
        ("WORKDIR /a/c", False),
        ("WORKDIR /", True),
    ]


def test_base_workdir_and_user_apply_without_ops() -> None:
    res = convert("FROM busybox\nRUN pwd\n", base(WorkingDir="/srv", User="daemon"))
    assert file_ops(res) == []
    defn = res.state.marshal(platform=res.platform)
    ex = next(
        b
        for b in (betterproto.which_one_of(pb.Op().parse(r), "op")[1] for r in defn.ops[:-1])
        if isinstance(b, pb.ExecOp)
    )
    assert ex.meta.cwd == "/srv" and ex.meta.user == "daemon"


def test_scratch_workdir_makes_a_layer_and_metadata_only_scratch_has_none() -> None:
    res = convert("FROM scratch\nWORKDIR /app\n")
    assert len(file_ops(res)) == 1
    res = convert('FROM scratch\nLABEL a=b\nCMD ["x"]\n')
    assert res.state.output is None
    assert cfg(res)["Env"] == [f"PATH={PATH}"] and cfg(res)["WorkingDir"] == "/"


def test_arg_history_and_source_date_epoch_stamps_history() -> None:
    res = convert(
        "FROM busybox\nARG A=1 B\nENV X=y\n", build_args={"SOURCE_DATE_EPOCH": "1000000000"}
    )
    hist = json.loads(res.config_json())["history"]
    assert [h["created_by"] for h in hist[1:]] == ["ARG A=1 B", "ENV X=y"]
    assert {h["created"] for h in hist} == {"2000-01-01T00:00:00Z", "2001-09-09T01:46:40Z"}


def test_explicit_target_platform_is_written_into_the_config() -> None:
    res = convert("FROM busybox\n", target_platform="linux/arm/v7")
    img = json.loads(res.config_json())
    assert (img["os"], img["architecture"], img["variant"]) == ("linux", "arm", "v7")


def test_parse_image_drops_unknown_fields_and_keeps_known_ones() -> None:
    raw = base(Healthcheck={"Test": ["NONE"]}, Foo="bar")
    raw["container_config"] = {"x": 1}
    img = parse_image(json.dumps(raw))
    assert "container_config" not in img and "Foo" not in img["config"]
    out = json.loads(marshal_image(img))
    assert out["config"]["Healthcheck"] == {"Test": ["NONE"]}
    assert out["rootfs"]["diff_ids"] == raw["rootfs"]["diff_ids"]
