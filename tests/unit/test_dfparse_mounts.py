"""RUN --mount values (parse_mount) and dispatch-time expansion of instruction fields."""

from __future__ import annotations

import pytest

from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile import instructions as ins
from bkcore.frontends.dockerfile.parser import parse
from bkcore.frontends.dockerfile.shell import Lexer, ShellError

VARS = {"D": "/data", "ID": "cid", "M": "0750", "SZ": "1g", "EMPTY": ""}


def expand(word: str) -> str:
    return Lexer().process_word(word, VARS)


def identity(word: str) -> str:
    return word


M = ins.Mount

MOUNT_CASES = [
    ("target=/ctx", M(target="/ctx")),
    ("type=bind,source=/src,target=/dst", M(source="/src", target="/dst")),
    ("type=bind,src=a,dst=b,rw", M(source="a", target="b", read_only=False)),
    ("type=bind,destination=/x,readwrite=true", M(target="/x", read_only=False)),
    ("type=bind,target=/x,ro=false", M(target="/x", read_only=False)),
    ("type=bind,target=/x,rw=0", M(target="/x", read_only=True)),
    ("TYPE=BIND,Target=/x,from=Stage", M(target="/x", from_="Stage")),
    ("type=cache,target=/c", M(type="cache", target="/c", read_only=False)),
    ("type=cache,target=/c,ro", M(type="cache", target="/c", read_only=True)),
    (
        "type=cache,id=$ID,target=$D,sharing=LOCKED,mode=$M,uid=1000,gid=0",
        M(
            type="cache",
            cache_id="cid",
            target="/data",
            read_only=False,
            cache_sharing="locked",
            mode=0o750,
            uid=1000,
            gid=0,
        ),
    ),
    (
        "type=cache,target=/c,sharing=private",
        M(type="cache", target="/c", read_only=False, cache_sharing="private"),
    ),
    ("type=tmpfs,target=/t", M(type="tmpfs", target="/t", read_only=False)),
    (
        "type=tmpfs,target=/t,size=64m",
        M(type="tmpfs", target="/t", read_only=False, size_limit=64 << 20),
    ),
    (
        "type=tmpfs,target=/t,size=$SZ",
        M(type="tmpfs", target="/t", read_only=False, size_limit=1 << 30),
    ),
    ("type=secret,id=tok", M(type="secret", cache_id="tok")),
    (
        "type=secret,id=tok,target=/run/t,required",
        M(type="secret", cache_id="tok", target="/run/t", required=True),
    ),
    (
        "type=secret,id=tok,required=false,mode=0444,uid=1,gid=2",
        M(type="secret", cache_id="tok", mode=0o444, uid=1, gid=2),
    ),
    ("type=secret,source=s,target=/s", M(type="secret", source="s", target="/s")),
    ("type=ssh", M(type="ssh")),
    (
        "type=ssh,id=key,required=true,target=/agent",
        M(type="ssh", cache_id="key", required=True, target="/agent"),
    ),
    ('"target=/a,b",type=bind', M(target="/a,b")),
    # CSV unquotes the field, then the shell-word expander removes the inner quotes
    ('"target=/with ""quote""",ro', M(target="/with quote")),
]


@pytest.mark.parametrize(("value", "expected"), MOUNT_CASES)
def test_parse_mount(value: str, expected: ins.Mount) -> None:
    assert ins.parse_mount(value, expand) == expected


MOUNT_ERRORS = [
    ("type=secret,id=tok,env=TOKEN", "unexpected key 'env' in 'env=TOKEN'"),
    ("type=tmpfs,target=/t,mode=0700", 'mode not allowed for "tmpfs" type mounts'),
    ("type=bind,target=/t,uid=1", 'uid not allowed for "bind" type mounts'),
    ("target=/t,gid=1", 'gid not allowed for "bind" type mounts'),
    ("type=bnd,target=/x", 'unsupported mount type "bnd" (did you mean bind?)'),
    ("type=volume,target=/x", 'unsupported mount type "volume"'),
    ("tagret=/x", "unexpected key 'tagret' in 'tagret=/x' (did you mean target?)"),
    ("type=bind,required", "unexpected key 'required' for mount type 'bind'"),
    ("type=cache,required=true", "unexpected key 'required' for mount type 'cache'"),
    ("type=cache,size=1m", "unexpected key 'size' for mount type 'cache'"),
    ("type=tmpfs,size=lots", "invalid value for size: lots"),
    ("type=bind,ro=maybe", "invalid value for ro: maybe"),
    ("type=secret,id=s,required=perhaps", "invalid value for required: perhaps"),
    ("type=cache,mode=0789", "invalid value 0789 for mode"),
    ("type=cache,uid=-1", "invalid value -1 for uid"),
    ("type=cache,gid=4294967296", "invalid value 4294967296 for gid"),
    ("type=cache,sharing=exclusive", 'unsupported sharing value "exclusive"'),
    ("type=bind,sharing=shared", "invalid cache sharing set for bind mount"),
    ("type=secret", "invalid secret mount. one of source, target required"),
    ("type=secret,id=a,source=b", "both source and id can't be set"),
    ("type=secret,id=a,from=stage", "secret mount should not have a from"),
    ("justaword", "invalid field 'justaword' must be a key=value pair"),
    ("", "failed to parse csv mounts: EOF"),
    (
        'target=a"b',
        'failed to parse csv mounts: parse error on line 1, column 9: bare " in non-quoted field',
    ),
]


@pytest.mark.parametrize(("value", "message"), MOUNT_ERRORS)
def test_parse_mount_errors(value: str, message: str) -> None:
    with pytest.raises(ins.MountError) as info:
        ins.parse_mount(value, expand)
    assert str(info.value) == message
    assert isinstance(info.value, FrontendError)


def test_parse_time_defers_everything_but_from() -> None:
    # without an expander (parse time) BuildKit checks only `from`; the rest fails at dispatch
    assert ins.parse_mount("type=tmpfs,target=/t,mode=0700", None) == ins.Mount()
    assert ins.parse_mount("type=secret,id=tok,env=X,required", None) == ins.Mount()
    assert ins.parse_mount("from=base,target=/x", None) == ins.Mount(from_="base")
    with pytest.raises(ins.MountError, match="'from' doesn't support variable expansion"):
        ins.parse_mount("from=${STAGE}", None)
    # with an expander the value of `from` is expanded instead
    assert ins.parse_mount("from=$ID", expand).from_ == "cid"


def test_bad_substitution_in_a_mount_value() -> None:
    with pytest.raises(ShellError, match="EMPTY: is not allowed to be empty"):
        ins.parse_mount("type=cache,target=${EMPTY:?}", expand)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100", 100),
        ("1k", 1024),
        ("1kb", 1024),
        ("2KiB", 2048),
        ("1.5m", 1572864),
        ("64M", 64 << 20),
        ("1 g", 1 << 30),
        ("1t", 1 << 40),
        ("1p", 1 << 50),
    ],
)
def test_ram_in_bytes(text: str, size: int) -> None:
    assert ins.ram_in_bytes(text) == size


@pytest.mark.parametrize("text", ["", "m", "1x", "-1m", "1.2.3m", "1mm"])
def test_ram_in_bytes_errors(text: str) -> None:
    with pytest.raises(ValueError):
        ins.ram_in_bytes(text)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("1ns", 1),
        ("1us", 1_000),
        ("1\u00b5s", 1_000),
        ("1\u03bcs", 1_000),
        ("300ms", 300_000_000),
        ("1.5h", 5_400_000_000_000),
        ("1h2m3.5s", 3_723_500_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("-2s", -2_000_000_000),
        ("+2s", 2_000_000_000),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert ins.parse_go_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        ("s", 'time: invalid duration "s"'),
        (".s", 'time: invalid duration ".s"'),
        ("1", 'time: missing unit in duration "1"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("99999999999h", 'time: invalid duration "99999999999h"'),
    ],
)
def test_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ins.parse_go_duration(text)
    assert str(info.value) == message


def test_suggestions() -> None:
    assert ins.levenshtein("kitten", "sitting") == 3
    assert ins.levenshtein("", "abc") == 3
    assert ins.suggest("bad", "chwon", ["chown", "from", "chmod"], True) == (
        "bad (did you mean chown?)"
    )
    assert ins.suggest("bad", "chown", ["chown"], True) == "bad"  # exact match: unrelated
    assert ins.suggest("bad", "zzzzzz", ["chown"], True) == "bad"
    assert ins.suggest("bad", "Runn", ["RUN"], False) == "bad (did you mean run?)"
    assert ins.suggest("bad", "RUNN", ["RUN"], False) == "bad (did you mean RUN?)"


# -- expand() ---------------------------------------------------------------------------------


def cmd_of(line: str) -> ins.Command:
    stages, _ = ins.parse_dockerfile(parse("FROM base\n" + line + "\n").ast)
    return stages[0].commands[0]


def test_expand_env_label_arg() -> None:
    env = cmd_of('ENV P=$D/bin Q="${ID} x" $ID=k')
    assert isinstance(env, ins.EnvCommand)
    env.expand(expand)
    assert [(kv.key, kv.value) for kv in env.env] == [
        ("P", "/data/bin"),
        ("Q", "cid x"),
        ("cid", "k"),
    ]
    label = cmd_of('LABEL "a b"="$ID"')
    assert isinstance(label, ins.LabelCommand)
    label.expand(expand)
    assert label.labels == [ins.KeyValuePair("a b", "cid")]
    raw = ins.LabelCommand(labels=[ins.KeyValuePair("k", "$ID")], no_exp=True)
    raw.expand(expand)
    assert raw.labels == [ins.KeyValuePair("k", "$ID")]
    arg = cmd_of("ARG A=$D B")
    assert isinstance(arg, ins.ArgCommand)
    arg.expand(expand)
    assert arg.args == [ins.KeyValuePairOptional("A", "/data"), ins.KeyValuePairOptional("B")]


def test_expand_copy_and_add() -> None:
    copy = cmd_of(
        "COPY --from=$ID --chown=$ID:$ID --chmod=$M --exclude=$ID.tmp "
        '["$D/a b", "${D}/c", "/dst/$ID/"]'
    )
    assert isinstance(copy, ins.CopyCommand)
    copy.expand(expand)
    assert copy.chown == "cid:cid"
    assert copy.exclude == ["cid.tmp"]
    assert copy.sources_and_dest.source_paths == ["/data/a b", "/data/c"]
    assert copy.sources_and_dest.dest_path == "/dst/cid/"
    # not expanded here (v0.11): --from (resolved by the converter) and --chmod
    assert (copy.from_, copy.chmod) == ("$ID", "$M")
    # the shell form splits on whitespace only, quotes or not (BuildKit's rule)
    split = cmd_of('COPY "a b" /d')
    assert isinstance(split, ins.CopyCommand)
    assert split.sources_and_dest.source_paths == ['"a', 'b"']
    # heredoc bodies are left to the converter (BuildKit's ExpandRaw keeps quotes)
    heredoc = cmd_of("COPY <<EOF /dst/$ID/\nbody '$ID'\nEOF")
    assert isinstance(heredoc, ins.CopyCommand)
    heredoc.expand(expand)
    assert heredoc.sources_and_dest.dest_path == "/dst/cid/"
    assert heredoc.sources_and_dest.source_contents == [ins.SourceContent("EOF", "body '$ID'\n")]
    add = cmd_of("ADD --checksum=$ID --chown=$ID src $D")
    assert isinstance(add, ins.AddCommand)
    add.expand(expand)
    assert (add.checksum, add.chown, add.sources_and_dest.dest_path) == ("cid", "cid", "/data")


def test_expand_single_value_commands() -> None:
    wd = cmd_of("WORKDIR $D/w")
    user = cmd_of("USER ${ID}:0")
    vol = cmd_of('VOLUME ["$D", "/v"]')
    sig = cmd_of("STOPSIGNAL ${SIG:-SIGTERM}")
    for c in (wd, user, vol, sig):
        c.expand(expand)  # type: ignore[attr-defined]
    assert isinstance(wd, ins.WorkdirCommand) and wd.path == "/data/w"
    assert isinstance(user, ins.UserCommand) and user.user == "cid:0"
    assert isinstance(vol, ins.VolumeCommand) and vol.volumes == ["/data", "/v"]
    assert isinstance(sig, ins.StopSignalCommand) and sig.signal == "SIGTERM"


def test_commands_without_expand() -> None:
    for line in (
        "CMD echo $D",
        "ENTRYPOINT $D",
        "EXPOSE $P",
        'SHELL ["$D"]',
        "HEALTHCHECK CMD $D",
        "ONBUILD RUN $D",
        "MAINTAINER $D",
    ):
        assert not hasattr(cmd_of(line), "expand"), line


def test_run_expand_parses_mounts_with_the_expander() -> None:
    run = cmd_of("RUN --mount=type=cache,id=$ID,target=$D --mount=type=tmpfs,target=/t make")
    assert isinstance(run, ins.RunCommand)
    assert run.mount_specs == []
    run.expand(expand)
    assert run.mount_specs == [
        ins.Mount(type="cache", cache_id="cid", target="/data", read_only=False),
        ins.Mount(type="tmpfs", target="/t", read_only=False),
    ]
    bad = cmd_of("RUN --mount=type=tmpfs,target=/t,mode=0700 true")
    assert isinstance(bad, ins.RunCommand)
    with pytest.raises(ins.MountError, match='mode not allowed for "tmpfs" type mounts'):
        bad.expand(identity)
