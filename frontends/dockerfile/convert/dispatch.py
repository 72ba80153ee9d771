"""Dispatching Dockerfile instructions onto a stage (every instruction but RUN/COPY/ADD,
which live in ``convert/run.py`` and ``convert/copy.py``).

Behaviour follows BuildKit v0.11's ``dispatch*`` functions: what each instruction does to the
LLB state and to the image config, and the history entry it writes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bkcore import llb
from bkcore.errors import BkError, FrontendError
from bkcore.frontends.dockerfile.convert.state import DispatchOptions, DispatchState
from bkcore.llb import paths

__all__ = [
    "dispatch",
    "dispatch_onbuild_triggers",
    "dispatch_user",
    "dispatch_workdir",
    "go_duration",
    "go_quote_list",
    "parse_port_specs",
]

#: ARGs that never reach the environment (they configure the frontend itself).
NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})

_SIGNALS = frozenset(
    "ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT SEGV "
    "STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ".split()
)


def _quote(s: str) -> str:
    from bkcore.frontends.dockerfile.shell import go_quote

    return go_quote(s)


def go_quote_list(values: Sequence[str] | None) -> str:
    """Go's ``fmt.Sprintf("%q", []string{...})``: ``["a" "b"]``."""
    return "[" + " ".join(_quote(v) for v in values or ()) + "]"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()`` (``1m30s``, ``500ms``, ``0s``)."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < 1_000_000_000:
        for unit, size in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if u < size * 1000:
                whole, frac = divmod(u, size)
                text = str(whole)
                if frac:
                    digits = len(str(size)) - 1
                    text += ("." + str(frac).rjust(digits, "0")).rstrip("0")
                return ("-" if neg else "") + text + unit
    secs, frac_ns = divmod(u, 1_000_000_000)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    stext = str(s)
    if frac_ns:
        stext += ("." + str(frac_ns).rjust(9, "0")).rstrip("0")
    out = ""
    if h:
        out = f"{h}h{m}m"
    elif m:
        out = f"{m}m"
    return ("-" if neg else "") + out + stext + "s"


def _go_rune(n: int) -> str:
    """Go's ``%q`` of an int (a rune literal), as BuildKit's HEALTHCHECK history shows it."""
    if 0x20 <= n < 0x7F and chr(n) not in "'\\":
        return f"'{chr(n)}'"
    if chr(n) == "'":
        return "'\\''"
    if n < 0x100:
        return f"'\\x{n:02x}'"
    return f"'\\u{n:04x}'"


# ----------------------------------------------------------------------------- helpers
def _err(opts: DispatchOptions, cmd: Any, message: str) -> FrontendError:
    return FrontendError(message, opts.filename, int(getattr(cmd, "start_line", 0) or 0))


def _kv_string(kv: Any) -> str:
    return f"{kv.key}={kv.value}"


def add_env(env: list[str], key: str, value: str) -> list[str]:
    """Set ``key`` in a ``K=V`` list in place of an existing entry (``addEnv``)."""
    out = list(env)
    for i, entry in enumerate(out):
        if entry.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return out
    out.append(f"{key}={value}")
    return out


def normalize_workdir(current: str, requested: str) -> str:
    """The new working directory (``system.NormalizeWorkdir`` for Linux)."""
    if not requested:
        raise ValueError("cannot normalize nothing")
    if not requested.startswith("/"):
        return paths.join("/", current or "/", requested)
    return paths.clean(requested)


# ----------------------------------------------------------------------------- instructions
def dispatch_env(d: DispatchState, cmd: Any) -> None:
    msg = "ENV"
    env = list(d.config.get("Env") or [])
    for kv in cmd.env:
        msg += " " + _kv_string(kv)
        d.state = d.state.with_env(kv.key, kv.value)
        env = add_env(env, kv.key, kv.value)
    d.config["Env"] = env
    d.add_history(msg, True)


def dispatch_maintainer(d: DispatchState, cmd: Any) -> None:
    d.image["author"] = cmd.maintainer
    d.add_history(f"MAINTAINER {cmd.maintainer}", True)


def dispatch_label(d: DispatchState, cmd: Any) -> None:
    msg = "LABEL"
    labels = d.config.get("Labels")
    if not isinstance(labels, dict):
        labels = {}
    for kv in cmd.labels:
        labels[kv.key] = kv.value
        msg += " " + _kv_string(kv)
    d.config["Labels"] = labels
    d.add_history(msg, True)


def dispatch_onbuild(d: DispatchState, cmd: Any) -> None:
    d.config["OnBuild"] = [*(d.config.get("OnBuild") or []), cmd.expression]


def _cmd_args(d: DispatchState, cmdline: Any) -> list[str] | None:
    """The argv of CMD/ENTRYPOINT (``None`` for ``ENTRYPOINT []``, which clears it)."""
    if cmdline.cmd_line is None:
        return None
    args = [str(a) for a in cmdline.cmd_line]
    if cmdline.prepend_shell:
        args = d.with_shell(args)
    return args


def dispatch_cmd(d: DispatchState, cmd: Any) -> None:
    args = _cmd_args(d, cmd.cmd)
    d.config["Cmd"] = args
    d.config["ArgsEscaped"] = True
    d.cmd_set = True
    d.add_history(f"CMD {go_quote_list(args)}", True)


def dispatch_entrypoint(d: DispatchState, cmd: Any) -> None:
    args = _cmd_args(d, cmd.cmd)
    d.config["Entrypoint"] = args
    if not d.cmd_set:
        d.config.pop("Cmd", None)
    d.add_history(f"ENTRYPOINT {go_quote_list(args)}", True)


def dispatch_healthcheck(d: DispatchState, cmd: Any) -> None:
    h = cmd.health
    test = list(h.test) if h.test is not None else None
    hc: dict[str, Any] = {}
    if test is not None:
        hc["Test"] = test
    for key, attr in (
        ("Interval", "interval_ns"),
        ("Timeout", "timeout_ns"),
        ("StartPeriod", "start_period_ns"),
    ):
        value = int(getattr(h, attr, 0) or 0)
        if value:
            hc[key] = value
    retries = int(getattr(h, "retries", 0) or 0)
    if retries:
        hc["Retries"] = retries
    d.config["Healthcheck"] = hc
    text = "&{{{} {} {} {} {}}}".format(
        go_quote_list(test),
        _quote(go_duration(hc.get("Interval", 0))),
        _quote(go_duration(hc.get("Timeout", 0))),
        _quote(go_duration(hc.get("StartPeriod", 0))),
        _go_rune(retries),
    )
    d.add_history(f"HEALTHCHECK {text}", True)


_PORT_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _port_range(text: str) -> tuple[int, int]:
    m = _PORT_RANGE.match(text)
    if m is None:
        raise ValueError
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) is not None else start
    if start > 65535 or end > 65535 or end < start:
        raise ValueError
    return start, end


def parse_port_specs(specs: Sequence[str]) -> list[str]:
    """The container ports of EXPOSE values (``nat.ParsePortSpecs``): ``80`` -> ``80/tcp``,
    ``7000-7002/udp`` -> three ports, protocols lower-cased; sorted, without duplicates."""
    ports: set[str] = set()
    for raw in specs:
        ip, host, container = "", "", raw
        if raw.startswith("[") and "]:" in raw:  # [IPv6]:host:container
            ip, _, rest = raw[1:].partition("]:")
            host, _, container = rest.rpartition(":")
        else:
            parts = raw.split(":")
            if len(parts) == 2:
                host, container = parts
            elif len(parts) >= 3:
                ip, host, container = ":".join(parts[:-2]), parts[-2], parts[-1]
        pp = container.split("/")
        if not container or not pp[0]:
            proto, port = "", ""
        elif len(pp) == 1 or not pp[1]:
            proto, port = "tcp", pp[0]
        else:
            proto, port = pp[1], pp[0]
        if ip and not re.fullmatch(r"[0-9a-fA-F:.\[\]]+", ip):
            raise ValueError(f"invalid IP address: {ip}")
        if not port:
            raise ValueError(f"no port specified: {raw}<empty>")
        try:
            start, end = _port_range(port)
        except ValueError:
            raise ValueError(f"invalid containerPort: {port}") from None
        if host:
            try:
                hstart, hend = _port_range(host)
            except ValueError:
                raise ValueError(f"invalid hostPort: {host}") from None
            if hend - hstart != end - start and hend != hstart:
                raise ValueError(
                    f"invalid ranges specified for container and host Ports: {port} and {host}"
                )
        if proto.lower() not in ("tcp", "udp", "sctp"):
            raise ValueError(f"invalid proto: {proto}")
        for p in range(start, end + 1):
            ports.add(f"{p}/{proto.lower()}")
    return sorted(ports)


def dispatch_expose(d: DispatchState, cmd: Any, opts: DispatchOptions) -> None:
    env = d.env()
    words: list[str] = []
    for p in cmd.ports:
        words.extend(opts.lexer.process_words(p, env))
    try:
        ports = parse_port_specs(words)
    except ValueError as exc:
        raise _err(opts, cmd, str(exc)) from None
    exposed = d.config.get("ExposedPorts")
    if not isinstance(exposed, dict):
        exposed = {}
    for p in ports:
        exposed[p] = {}
    d.config["ExposedPorts"] = exposed
    d.add_history("EXPOSE map[" + " ".join(f"{p}:{{}}" for p in ports) + "]", True)


def dispatch_user(d: DispatchState, user: str, *, commit: bool) -> None:
    d.state = d.state.with_user(user)
    d.config["User"] = user
    if commit:
        d.add_history(f"USER {user}", True)


def dispatch_volume(d: DispatchState, cmd: Any, opts: DispatchOptions) -> None:
    volumes = d.config.get("Volumes")
    if not isinstance(volumes, dict):
        volumes = {}
    for v in cmd.volumes:
        if v == "":
            raise _err(opts, cmd, "VOLUME specified can not be an empty string")
        volumes[v] = {}
    d.config["Volumes"] = volumes
    d.add_history("VOLUME [" + " ".join(cmd.volumes) + "]", True)


def check_signal(sig: str) -> None:
    """``signal.ParseSignal``: a non-zero number or a known name with or without ``SIG``."""
    if re.fullmatch(r"[-+]?\d+", sig):
        if int(sig) == 0:
            raise ValueError(f"Invalid signal: {sig}")
        return
    name = sig.upper()
    name = name.removeprefix("SIG")
    if name in _SIGNALS or re.fullmatch(r"RTMIN(\+\d+)?|RTMAX(-\d+)?", name):
        return
    raise ValueError(f"Invalid signal: {sig}")


def dispatch_stopsignal(d: DispatchState, cmd: Any, opts: DispatchOptions) -> None:
    try:
        check_signal(cmd.signal)
    except ValueError as exc:
        raise _err(opts, cmd, str(exc)) from None
    d.config["StopSignal"] = cmd.signal
    d.add_history(f"STOPSIGNAL {cmd.signal}", True)


def dispatch_shell(d: DispatchState, cmd: Any) -> None:
    d.config["Shell"] = list(cmd.shell)
    d.add_history("SHELL [" + " ".join(cmd.shell) + "]", True)


def dispatch_arg(d: DispatchState, cmd: Any, opts: DispatchOptions) -> None:
    """ARG: value = build arg, else the Dockerfile default, else the global ARG's value;
    a set value reaches later processes (the state env), never the image config."""
    commit: list[str] = []
    for arg in cmd.args:
        key, default = arg.key, arg.value
        commit.append(key if default is None else f"{key}={default}")
        value = opts.build_arg_values.get(key, default)
        if key not in opts.build_arg_values and default is None:
            for mk, mv in opts.meta_args:
                if mk == key:
                    value = mv
        if value is not None and key not in NON_ENV_ARGS:
            d.state = d.state.with_env(key, value)
        d.used_args.add(key)
        d.build_args.append((key, value))
    d.add_history("ARG " + " ".join(commit), True)


def dispatch_workdir(
    d: DispatchState, path: str, opts: DispatchOptions, cmd: Any = None, *, commit: bool = True
) -> None:
    """WORKDIR: the new directory joined to the previous one and cleaned; with ``commit`` a
    ``mkdir -p`` FileOp owned by the current USER (a layer) unless it is ``/``."""
    try:
        wd = normalize_workdir(str(d.config.get("WorkingDir") or ""), path)
    except ValueError as exc:
        raise _err(opts, cmd, f"normalizing workdir: {exc}") from None
    d.config["WorkingDir"] = wd
    d.state = d.state.with_cwd(wd)
    if not commit:
        return
    with_layer = False
    if wd != "/":
        user = str(d.config.get("User") or "")
        original = str(getattr(cmd, "original", "") or f"WORKDIR {path}")
        name = d.custom_name(original)
        action = llb.mkdir(wd, 0o755, parents=True, owner=llb.Chown.parse(user) if user else None)
        d.state = d.state.file(
            action, meta=opts.op_meta(d, cmd, custom_name=name, ignore_cache=False)
        )
        with_layer = True
    d.add_history(f"WORKDIR {wd}", not with_layer)


# ----------------------------------------------------------------------------- the loop
def _expand_cmd(d: DispatchState, cmd: Any) -> None:
    expand = getattr(cmd, "expand", None)
    if callable(expand):
        expand(d.expander())


def dispatch(
    d: DispatchState, cmd: Any, opts: DispatchOptions, sources: Sequence[Any] = ()
) -> None:
    """Apply one instruction to ``d``. Errors are FrontendErrors naming the line."""
    line = int(getattr(cmd, "start_line", 0) or 0)
    try:
        _expand_cmd(d, cmd)
        _dispatch(d, cmd, opts)
    except FrontendError as exc:
        if exc.line or not line:
            raise
        msg = getattr(exc, "message", None) or str(exc)
        raise FrontendError(str(msg), opts.filename, line) from exc
    except BkError as exc:
        raise FrontendError(str(exc), opts.filename, line) from exc


def _dispatch(d: DispatchState, cmd: Any, opts: DispatchOptions) -> None:
    name = cmd.name
    if name == "env":
        dispatch_env(d, cmd)
    elif name == "maintainer":
        dispatch_maintainer(d, cmd)
    elif name == "run":
        from bkcore.frontends.dockerfile.convert.run import dispatch_run

        dispatch_run(d, cmd, opts)
    elif name in ("copy", "add"):
        from bkcore.frontends.dockerfile.convert.copy import dispatch_copy

        dispatch_copy(d, cmd, opts)
    elif name == "workdir":
        dispatch_workdir(d, cmd.path, opts, cmd)
    elif name == "label":
        dispatch_label(d, cmd)
    elif name == "onbuild":
        dispatch_onbuild(d, cmd)
    elif name == "cmd":
        dispatch_cmd(d, cmd)
    elif name == "entrypoint":
        dispatch_entrypoint(d, cmd)
    elif name == "healthcheck":
        dispatch_healthcheck(d, cmd)
    elif name == "expose":
        dispatch_expose(d, cmd, opts)
    elif name == "user":
        dispatch_user(d, cmd.user, commit=True)
    elif name == "volume":
        dispatch_volume(d, cmd, opts)
    elif name == "stopsignal":
        dispatch_stopsignal(d, cmd, opts)
    elif name == "shell":
        dispatch_shell(d, cmd)
    elif name == "arg":
        dispatch_arg(d, cmd, opts)
    else:  # pragma: no cover - the parser rejects unknown instructions
        raise _err(opts, cmd, f"unknown instruction: {name.upper()}")


def dispatch_onbuild_triggers(
    d: DispatchState, triggers: Sequence[str], opts: DispatchOptions, line: int
) -> None:
    """Run the base image's ONBUILD triggers at the start of the stage (parsed like
    Dockerfile lines, dispatched like the stage's own instructions)."""
    from bkcore.frontends.dockerfile import instructions as ins
    from bkcore.frontends.dockerfile.convert.graph import register_sources
    from bkcore.frontends.dockerfile.parser import parse

    for trigger in triggers:
        try:
            ast = parse(trigger).ast
            if len(ast.children) != 1:
                raise FrontendError("onbuild trigger should be a single expression")
            cmd = ins.parse_command(ast.children[0])
        except FrontendError as exc:
            msg = getattr(exc, "message", None) or str(exc)
            raise FrontendError(str(msg), opts.filename, line) from exc
        register_sources(d, cmd, opts, line=line)
        # the trigger's own line numbers point into the trigger text, not the Dockerfile
        for attr in ("start_line", "end_line"):
            if hasattr(cmd, attr):
                setattr(cmd, attr, line)
        dispatch(d, cmd, opts)
