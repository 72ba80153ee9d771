"""``RUN``: the exec op BuildKit v0.11's dockerfile2llb makes for it (dispatchRun).

* Shell form goes through the stage's ``SHELL`` (default ``/bin/sh -c``), its words joined by
  a space; JSON form runs as written.
* Heredocs: ``RUN <<EOF`` alone passes the body to the shell as the script, or, when the body
  starts with ``#!``, mounts it as an executable file under ``/dev/pipes/`` and runs that; any
  other heredoc use (``RUN cat <<EOF``, several heredocs) hands the shell the command line
  followed by each body and its terminator, so the shell reads them itself.
* The process gets the stage state's environment (image ``ENV`` plus the ``ARG`` values in
  scope, which are not written to the image config), working directory and user.
* ``--mount`` (see :mod:`.mounts`), ``--network=default|none|host``, ``--security=sandbox|
  insecure``; the build's extra hosts, ulimits, ``/dev/shm`` size and cgroup parent.
* History: ``RUN [|N ARG=value...] <argv> # buildkit`` with a layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from bkcore import llb
from bkcore.errors import BkError, FrontendError
from bkcore.frontends.dockerfile import instructions as ins
from bkcore.frontends.dockerfile.convert import mounts as _mounts
from bkcore.frontends.dockerfile.parser import chomp_heredoc_content, must_parse_heredoc

if TYPE_CHECKING:
    from bkcore.frontends.dockerfile.convert.state import DispatchOptions, DispatchState


# ---------------------------------------------------------------- shared helpers (RUN/COPY)
def expander(d: DispatchState, opts: DispatchOptions, *, raw: bool = False) -> Callable[[str], str]:
    """Single-word expansion with the stage state's environment (``d.state.Env``).

    ``raw``: BuildKit's ``ExpandRaw`` for heredoc bodies (quotes are not processed, the escape
    character is always ``\\``).
    """
    from bkcore.frontends.dockerfile.shell import Lexer

    env = d.env()
    lexer = Lexer("\\", skip_process_quotes=True) if raw else opts.lexer

    def expand(word: str) -> str:
        return lexer.process_word(word, env)

    return expand


def display_name(opts: DispatchOptions, text: str, env: Mapping[str, str], *, raw: bool) -> str:
    """BuildKit's ``processCmdEnv`` for a progress name (the keyword is upper-cased later).

    ``raw``: RUN's variant (quotes kept, unset variables left as written). On an expansion
    error the text is kept as written.
    """
    from bkcore.frontends.dockerfile.shell import Lexer

    lexer = opts.lexer
    if raw:
        lexer = Lexer(lexer.escape, raw_quotes=True, skip_unset_env=True)
    try:
        return lexer.process_word(text, env)
    except BkError:
        return text


def frontend_error(opts: DispatchOptions, cmd: ins.Command, message: str) -> FrontendError:
    return FrontendError(message, opts.filename, cmd.start_line)


# ---------------------------------------------------------------- RUN
def summarize_heredoc(doc: str) -> str:
    lines = doc.strip().replace("\r\n", "\n").split("\n")
    return lines[0] + ("..." if len(lines) > 1 else "")


def _network(value: str) -> llb.NetMode | None:
    v = (value or "default").lower()
    if v == "default":
        return None
    if v == "none":
        return llb.NetMode.NONE
    if v == "host":
        return llb.NetMode.HOST
    raise FrontendError(f'unsupported network mode "{value}"')


def _security(value: str) -> llb.SecurityMode | None:
    v = (value or "sandbox").lower()
    if v == "sandbox":
        return None
    if v == "insecure":
        return llb.SecurityMode.INSECURE
    raise FrontendError(f'unsupported security mode "{value}"')


def dispatch_run(d: DispatchState, cmd: ins.RunCommand, opts: DispatchOptions) -> None:
    """Append the RUN's exec op to ``d.state`` and its entry to the image history."""
    try:
        _dispatch_run(d, cmd, opts)
    except FrontendError as exc:
        if exc.line:
            raise
        raise frontend_error(opts, cmd, str(exc)) from exc


def _dispatch_run(d: DispatchState, cmd: ins.RunCommand, opts: DispatchOptions) -> None:
    line = cmd.cmd
    args = list(line.cmd_line or [])
    custom = cmd.original
    extra_mounts: list[llb.Mount] = []
    if line.files:
        if len(args) != 1 or not line.prepend_shell:
            raise FrontendError(f"parsing produced an invalid run command: {args}")
        first = line.files[0]
        if must_parse_heredoc(args[0]) is not None:
            data = chomp_heredoc_content(first.data) if first.chomp else first.data
            if data.startswith("#!") and d.image.get("os", "linux") != "windows":
                inline = llb.scratch().file(
                    llb.mkfile(first.name, 0o755, data),
                    custom_name="[internal] preparing inline document",
                )
                extra_mounts.append(llb.bind("/dev/pipes/", inline, selector="/", readonly=True))
                args = [_mounts.llb_join("/dev/pipes/", first.name)]
            else:
                args = [data]
            custom += f" ({summarize_heredoc(first.data)})"
        else:
            full = args[0]
            for f in line.files:
                full += "\n" + f.data + f.name
            args = [full]
    if line.prepend_shell:
        args = d.with_shell(args)

    env = d.env()
    parsed = _mounts.parse_mounts(cmd, expander(d, opts))
    run_mounts = extra_mounts + _mounts.run_mounts(d, parsed, opts)
    security = _security(cmd.security)
    network = _network(cmd.network)

    st = d.state
    for ul in opts.ulimits:
        st = st.with_ulimit(ul.name, ul.soft, ul.hard)
    for host, ip in opts.extra_hosts:
        st = st.with_extra_host(host, ip)
    if opts.shm_size > 0:
        run_mounts.append(llb.tmpfs("/dev/shm", size=opts.shm_size))
    if opts.cgroup_parent:
        st = st.with_cgroup_parent(opts.cgroup_parent)

    name = d.custom_name(display_name(opts, custom, env, raw=True), expand=False)
    meta = opts.op_meta(d, cmd, custom_name=name, df_command=cmd.original)
    try:
        exec_state = st.run(
            args,
            mounts=run_mounts,
            network=network,
            security=security,
            proxy_env=opts.proxy_env,
            meta=meta,
        )
    except BkError as exc:
        raise FrontendError(str(exc)) from exc
    # keep the stage's own settings (the build-wide ulimits/hosts apply to this process only)
    d.state = d.state.with_output(exec_state.root().output)
    d.add_history(d.run_history(args), False, buildkit=True)
