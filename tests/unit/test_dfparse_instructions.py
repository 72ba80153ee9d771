"""Typed Dockerfile instructions: stages, flags, per-instruction rules, mounts, expansion."""

from __future__ import annotations

import pytest

from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile import instructions as ins
from bkcore.frontends.dockerfile.parser import ParseError, parse


def one(line: str) -> ins.Command:
    """The single command of a one-stage Dockerfile ``FROM base`` + ``line``."""
    stages, _ = ins.parse_dockerfile(parse("FROM base\n" + line + "\n").ast)
    (cmd,) = stages[0].commands
    return cmd


def error_of(line: str) -> str:
    with pytest.raises(ParseError) as info:
        one(line)
    assert info.value.line == 2
    assert isinstance(info.value, FrontendError)
    prefix = "dockerfile parse error on line 2: "
    assert info.value.message.startswith(prefix)
    return info.value.message[len(prefix) :]


# -- stages ------------------------------------------------------------------------------


def test_stages_and_meta_args() -> None:
    text = (
        "ARG BASE=busybox\nARG TAG\n# build compiles things\n"
        "FROM --platform=$BUILDPLATFORM ${BASE}:${TAG} AS Build\nRUN make\n"
        "FROM build\nCOPY --from=build /out /out\n"
    )
    stages, meta = ins.parse_dockerfile(parse(text).ast)
    assert [(a.key, a.value) for m in meta for a in m.args] == [("BASE", "busybox"), ("TAG", None)]
    first, second = stages
    assert first.name == "build"
    assert first.base_name == "${BASE}:${TAG}"
    assert first.platform == "$BUILDPLATFORM"
    assert first.comment == "compiles things"
    assert first.original == "FROM --platform=$BUILDPLATFORM ${BASE}:${TAG} AS Build"
    assert (first.start_line, first.end_line) == (4, 4)
    assert [c.name for c in first.commands] == ["run"]
    assert (second.name, second.base_name) == ("", "build")
    assert isinstance(second.commands[0], ins.CopyCommand)


@pytest.mark.parametrize("name", ["a", "stage-1", "my_stage.v2", "Mixed.Case"])
def test_valid_stage_names(name: str) -> None:
    stages, _ = ins.parse_dockerfile(parse(f"FROM x AS {name}\n").ast)
    assert stages[0].name == name.lower()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "FROM x AS 1st",
            'invalid name for build stage: "1st", name can\'t start with a number or contain '
            "symbols",
        ),
        (
            "FROM x AS a/b",
            'invalid name for build stage: "a/b", name can\'t start with a number or contain '
            "symbols",
        ),
        ("FROM x y", "FROM requires either one or three arguments"),
        ("FROM x AS", "FROM requires either one or three arguments"),
        ("FROM x AS a b", "FROM requires either one or three arguments"),
        ("FROM x TO a", "FROM requires either one or three arguments"),
        ("FROM --platfrom=linux x", "unknown flag: platfrom (did you mean platform?)"),
    ],
)
def test_from_errors(line: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        ins.parse_dockerfile(parse(line + "\n").ast)
    assert info.value.message == f"dockerfile parse error on line 1: {message}"


def test_instruction_before_from() -> None:
    with pytest.raises(ParseError) as info:
        ins.parse_dockerfile(parse("ARG A\nRUN x\nFROM y\n").ast)
    assert (info.value.message, info.value.line) == ("no build stage in current context", 2)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("BOGUSWORD bar", "unknown instruction: BOGUSWORD"),
        ("FOO bar", "unknown instruction: FOO (did you mean FROM?)"),
        ("RUNN x", "unknown instruction: RUNN (did you mean RUN?)"),
        ("workdri /x", "unknown instruction: workdri (did you mean workdir?)"),
        ("Copyy a b", "unknown instruction: Copyy (did you mean copy?)"),
    ],
)
def test_unknown_instruction(line: str, message: str) -> None:
    assert error_of(line) == message


# -- flags -------------------------------------------------------------------------------


def test_copy_flags() -> None:
    cmd = one(
        "COPY --from=Build --chown=app:staff --chmod=0640 --link --parents "
        "--exclude=*.md --exclude=tmp a b /dst/"
    )
    assert isinstance(cmd, ins.CopyCommand)
    assert (cmd.from_, cmd.chown, cmd.chmod, cmd.link, cmd.parents) == (
        "Build",
        "app:staff",
        "0640",
        True,
        True,
    )
    assert cmd.exclude == ["*.md", "tmp"]
    assert cmd.sources_and_dest.source_paths == ["a", "b"]
    assert cmd.sources_and_dest.dest_path == "/dst/"
    assert cmd.original.startswith("COPY --from=Build")
    plain = one("COPY a b")
    assert isinstance(plain, ins.CopyCommand)
    assert (plain.from_, plain.link, plain.parents, plain.exclude) == ("", False, False, [])


def test_add_flags() -> None:
    cmd = one(
        "ADD --chown=1 --chmod=755 --link=true --keep-git-dir --checksum=sha256:abc "
        "--exclude=.git https://example.com/x.tgz /x"
    )
    assert isinstance(cmd, ins.AddCommand)
    assert (cmd.chown, cmd.chmod, cmd.link, cmd.keep_git_dir, cmd.checksum) == (
        "1",
        "755",
        True,
        True,
        "sha256:abc",
    )
    assert cmd.exclude == [".git"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("COPY --chwon=app any.txt /", "unknown flag: chwon (did you mean chown?)"),
        ("COPY --form=a x y", "unknown flag: form (did you mean from?)"),
        ("COPY --bogus x y", "unknown flag: bogus"),
        ("ADD --from=a x y", "unknown flag: from"),
        ("ADD --keep-git-dri x y", "unknown flag: keep-git-dri (did you mean keep-git-dir?)"),
        ("COPY --link=yes x y", "expecting boolean value for flag link, not: yes"),
        ("COPY --link= x y", "missing a value on flag: link"),
        ("COPY --chown x y", "missing a value on flag: chown"),
        ("COPY --chown=a --chown=b x y", "duplicate flag specified: chown"),
        (
            "COPY x",
            "COPY requires at least two arguments, but only one was provided. "
            "Destination could not be determined",
        ),
        (
            "ADD x",
            "ADD requires at least two arguments, but only one was provided. "
            "Destination could not be determined",
        ),
        ("COPY a <<EOF\nx\nEOF", "COPY cannot accept a heredoc as a destination"),
        ("RUN --network=bridge x", 'invalid network mode "bridge"'),
        ("RUN --security=root x", 'security "root" is not valid'),
        ("RUN --mount x", "missing a value on flag: mount"),
        (
            "RUN --mount=type=bind,from=$STAGE x",
            "'from' doesn't support variable expansion, define alias stage instead",
        ),
        (
            'RUN --mount=type=bind,\\"a x',
            "failed to parse csv mounts: parse error on line 1, column 11: "
            'extraneous or missing " in quoted-field',
        ),
        ("ENV --x=1 a=b", "unknown flag: x"),
        ("WORKDIR --x=1 /a", "unknown flag: x"),
        ("MAINTAINER", "MAINTAINER requires exactly one argument"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("USER", "USER requires exactly one argument"),
        ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
        ("ENV", "ENV requires at least one argument"),
        ("ENV =x", "ENV names can not be blank"),
        ("LABEL", "LABEL requires at least one argument"),
        ("ARG", "ARG requires at least one argument"),
        ("ARG =x", "ARG names can not be blank"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("VOLUME", "VOLUME requires at least one argument"),
        ('VOLUME ["/a", " "]', "VOLUME specified can not be an empty string"),
        ("SHELL /bin/bash -c", "SHELL requires the arguments to be in JSON form"),
        ("SHELL []", "SHELL requires at least one argument"),
        ("ONBUILD", "ONBUILD requires at least one argument"),
        ("ONBUILD ONBUILD RUN true", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("ONBUILD from x", "FROM isn't allowed as an ONBUILD trigger"),
        ("ONBUILD MAINTAINER me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK RUN x", 'Unknown type "RUN" in HEALTHCHECK (try CMD)'),
        ("HEALTHCHECK --interval=5 CMD x", 'time: missing unit in duration "5"'),
        ("HEALTHCHECK --interval=5y CMD x", 'time: unknown unit "y" in duration "5y"'),
        ("HEALTHCHECK --timeout=abc CMD x", 'time: invalid duration "abc"'),
        ("HEALTHCHECK --timeout=500us CMD x", 'Interval "timeout" cannot be less than 1ms'),
        ("HEALTHCHECK --interval=-1s CMD x", 'Interval "interval" cannot be less than 1ms'),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK --retries=x CMD x", 'strconv.ParseInt: parsing "x": invalid syntax'),
        (
            "HEALTHCHECK --retries=3000000000 CMD x",
            'strconv.ParseInt: parsing "3000000000": value out of range',
        ),
        ("HEALTHCHECK --intervall=1s CMD x", "unknown flag: intervall (did you mean interval?)"),
    ],
)
def test_instruction_errors(line: str, message: str) -> None:
    assert error_of(line) == message


def test_flags_ignored_where_buildkit_ignores_them() -> None:
    arg = one("ARG --whatever A=1")
    assert isinstance(arg, ins.ArgCommand)
    assert [(a.key, a.value) for a in arg.args] == [("A", "1")]
    sig = one("STOPSIGNAL --x SIGINT")
    assert isinstance(sig, ins.StopSignalCommand)
    assert sig.signal == "SIGINT"


# -- per instruction ---------------------------------------------------------------------


def test_run_forms_mounts_and_files() -> None:
    run = one("RUN --mount=type=cache,target=/c --mount=target=/ctx --network=none echo $A")
    assert isinstance(run, ins.RunCommand)
    assert run.mounts == ["type=cache,target=/c", "target=/ctx"]
    assert (run.network, run.security) == ("none", "sandbox")
    assert run.flags_used == ["mount", "network"]
    assert run.cmd == ins.ShellDependantCmdLine(["echo $A"], [], True)
    exec_form = one('RUN --security=insecure ["a", "b"]')
    assert isinstance(exec_form, ins.RunCommand)
    assert exec_form.cmd == ins.ShellDependantCmdLine(["a", "b"], [], False)
    assert exec_form.security == "insecure"
    heredoc = one("RUN <<-EOF bash\n\techo hi\n\tEOF")
    assert isinstance(heredoc, ins.RunCommand)
    assert heredoc.cmd.cmd_line == ["<<-EOF bash"]
    assert heredoc.cmd.files == [ins.ShellInlineFile("EOF", "\techo hi\n", True)]


def test_cmd_and_entrypoint() -> None:
    cmd = one("CMD echo  hi")
    assert isinstance(cmd, ins.CmdCommand)
    assert cmd.cmd == ins.ShellDependantCmdLine(["echo  hi"], [], True)
    empty_cmd = one("CMD []")
    assert isinstance(empty_cmd, ins.CmdCommand)
    assert empty_cmd.cmd.cmd_line == []
    ep = one("ENTRYPOINT []")
    assert isinstance(ep, ins.EntrypointCommand)
    assert ep.cmd.cmd_line is None
    assert ep.cmd.prepend_shell is False
    ep2 = one('ENTRYPOINT ["/bin/app", "--flag"]')
    assert isinstance(ep2, ins.EntrypointCommand)
    assert ep2.cmd.cmd_line == ["/bin/app", "--flag"]


def test_env_label_arg() -> None:
    env = one('ENV A=1 B="two words" C=')
    assert isinstance(env, ins.EnvCommand)
    assert env.env == [
        ins.KeyValuePair("A", "1"),
        ins.KeyValuePair("B", '"two words"'),
        ins.KeyValuePair("C", ""),
    ]
    legacy = one("ENV K v  w")
    assert isinstance(legacy, ins.EnvCommand)
    assert legacy.env == [ins.KeyValuePair("K", "v  w")]
    label = one('LABEL "com.x"="a b" escaped\\ key=v')
    assert isinstance(label, ins.LabelCommand)
    assert label.labels == [
        ins.KeyValuePair('"com.x"', '"a b"'),
        ins.KeyValuePair("escaped\\ key", "v"),
    ]
    arg_text = "# A the first one\nARG A=1 B C=\nFROM x\n"
    _, meta = ins.parse_dockerfile(parse(arg_text).ast)
    assert meta[0].args == [
        ins.KeyValuePairOptional("A", "1", "the first one"),
        ins.KeyValuePairOptional("B", None),
        ins.KeyValuePairOptional("C", ""),
    ]


def test_healthcheck() -> None:
    hc = one(
        "HEALTHCHECK --interval=1m30s --timeout=2.5s --start-period=1h --retries=3 "
        "CMD curl -f http://x/"
    )
    assert isinstance(hc, ins.HealthCheckCommand)
    assert hc.health == ins.HealthConfig(
        test=["CMD-SHELL", "curl -f http://x/"],
        interval_ns=90_000_000_000,
        timeout_ns=2_500_000_000,
        start_period_ns=3_600_000_000_000,
        retries=3,
    )
    exec_hc = one('HEALTHCHECK --interval=0 CMD ["check", "-v"]')
    assert isinstance(exec_hc, ins.HealthCheckCommand)
    assert exec_hc.health == ins.HealthConfig(test=["CMD", "check", "-v"])
    none = one("healthcheck none")
    assert isinstance(none, ins.HealthCheckCommand)
    assert none.health == ins.HealthConfig(test=["NONE"])


def test_expose_volume_user_workdir_stopsignal_shell_maintainer() -> None:
    expose = one("EXPOSE 9090/SCTP 80 7000-7002/udp")
    assert isinstance(expose, ins.ExposeCommand)
    assert expose.ports == ["7000-7002/udp", "80", "9090/SCTP"]
    vol = one('VOLUME ["/a", "/b c"]')
    assert isinstance(vol, ins.VolumeCommand)
    assert vol.volumes == ["/a", "/b c"]
    vol2 = one("VOLUME /cache/ /data")
    assert isinstance(vol2, ins.VolumeCommand)
    assert vol2.volumes == ["/cache/", "/data"]
    user = one("USER app:staff")
    assert isinstance(user, ins.UserCommand)
    assert user.user == "app:staff"
    wd = one("WORKDIR ./nested/../final")
    assert isinstance(wd, ins.WorkdirCommand)
    assert wd.path == "./nested/../final"
    sig = one("STOPSIGNAL SIGUSR1")
    assert isinstance(sig, ins.StopSignalCommand)
    assert sig.signal == "SIGUSR1"
    sh = one('SHELL ["/bin/sh", "-ec"]')
    assert isinstance(sh, ins.ShellCommand)
    assert sh.shell == ["/bin/sh", "-ec"]
    mt = one("MAINTAINER Jane Doe")
    assert isinstance(mt, ins.MaintainerCommand)
    assert mt.maintainer == "Jane Doe"


def test_onbuild_keeps_the_trigger_text() -> None:
    ob = one("onbuild   run   x")
    assert isinstance(ob, ins.OnbuildCommand)
    assert ob.expression == "run   x"
    with_heredoc = one("ONBUILD RUN <<EOF\necho $A\nEOF")
    assert isinstance(with_heredoc, ins.OnbuildCommand)
    assert with_heredoc.expression == "RUN <<EOF\necho $A\nEOF"
    # the trigger parses back into a command, as the converter does in the child stage
    trig = ins.parse_command(parse(with_heredoc.expression).ast.children[0])
    assert isinstance(trig, ins.RunCommand)
    assert trig.cmd.files == [ins.ShellInlineFile("EOF", "echo $A\n", False)]


def test_parse_command_refuses_from() -> None:
    with pytest.raises(ParseError, match="is not a command type"):
        ins.parse_command(parse("FROM x").ast.children[0])


def test_copy_heredoc_sources() -> None:
    cmd = one("COPY --chmod=755 <<-EOT <<'RAW' file /dst/\n\thello $A\n\tEOT\n$B\nRAW")
    assert isinstance(cmd, ins.CopyCommand)
    sd = cmd.sources_and_dest
    assert sd.source_paths == ["file"]
    assert sd.source_contents == [
        ins.SourceContent("EOT", "hello $A\n", True),
        ins.SourceContent("RAW", "$B\n", False),
    ]
