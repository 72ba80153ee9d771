"""How git reaches a remote: auth from the job's session secrets, SSH settings, and the
:class:`~bkcore.sources.git.gitcmd.GitRunner` carrying them.

* http(s): the secret ``git.authheadersecret`` (a whole ``Authorization`` value) or else
  ``git.authtokensecret`` (a token, sent as basic ``x-access-token:<token>``) becomes
  ``http.<scheme://host[:port]/>.extraheader``, scoped to the remote's host and passed to git
  only through its environment. A missing secret means no auth.
* ssh: ``git.knownsshhosts`` pins host keys (strict checking), else keys are not checked
  (as BuildKit does); ``git.mountsshsock`` forwards the session's SSH agent for the run.
* Transports git may use, submodules included: http, https, git, ssh, and file only when the
  remote itself is a ``file://`` one (``protocol.file.allow=always`` then too).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shlex
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bkcore.errors import SessionError
from bkcore.sources.git.gitcmd import GitRunner

if TYPE_CHECKING:
    from bkcore.source import SourceContext
    from bkcore.sources.git.spec import GitSpec

__all__ = [
    "GIT_DIR",
    "auth_scope",
    "open_runner",
    "remove",
    "strip_credentials",
    "sweep_tmp",
    "tmpdir",
]

#: Directory under the store root holding remotes, git's private home and scratch dirs.
GIT_DIR = "git"


def session_group(ctx: SourceContext) -> list[str]:
    """The session ids of the jobs sharing the vertex, in job order, without repeats."""
    out: list[str] = []
    for job in ctx.jobs():
        sid = job.values.get("session")
        if isinstance(sid, str) and sid and sid not in out:
            out.append(sid)
    return out


def auth_scope(url: str) -> str:
    """``scheme://host[:port]/`` of an http(s) URL, without credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/"


def strip_credentials(url: str) -> str:
    """``url`` without its ``user[:password]@`` part (scp-like remotes are kept)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def tmpdir(store_root: Path) -> str:
    """A new private scratch directory under ``<store root>/git/tmp``, named after this
    process so :func:`sweep_tmp` can tell when it was left behind."""
    from bkcore.cache import procs

    base = store_root / GIT_DIR / "tmp"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    pid, started = procs.me()
    return tempfile.mkdtemp(prefix=f"{pid}-{started}-", dir=base)


def sweep_tmp(store_root: Path) -> None:
    """Remove scratch directories whose process is gone (killed mid-checkout)."""
    from bkcore.cache import procs

    base = store_root / GIT_DIR / "tmp"
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return
    for name in names:
        pid, _, rest = name.partition("-")
        started = rest.partition("-")[0]
        if pid.isdigit() and started and not procs.alive(int(pid), started):
            remove(os.path.join(base, name))


def remove(path: str) -> None:
    from bkcore.cache.fsutil import remove as remove_tree

    remove_tree(path)


async def _secret(ctx: SourceContext, group: list[str], secret_id: str) -> bytes:
    from bkcore.session.secrets import get_secret

    try:
        return await ctx.engine.sessions.any(group, lambda conn: get_secret(conn.caller, secret_id))
    except SessionError:  # not found, or no session serving it: no auth
        return b""


async def auth_header(ctx: SourceContext, spec: GitSpec) -> str | None:
    """The ``Authorization: ...`` header for ``spec``'s remote, or None."""
    group = session_group(ctx)
    if not group or spec.transport != "http":
        return None
    header = (await _secret(ctx, group, spec.header_secret)).strip()
    if header:
        return "Authorization: " + header.decode(errors="replace")
    token = (await _secret(ctx, group, spec.token_secret)).strip()
    if token:
        return "Authorization: basic " + base64.b64encode(b"x-access-token:" + token).decode()
    return None


async def _ssh_env(
    ctx: SourceContext, spec: GitSpec, stack: contextlib.AsyncExitStack
) -> dict[str, str]:
    from bkcore.errors import SourceError

    ssh = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes"]
    if spec.known_ssh_hosts:
        tmp = await asyncio.to_thread(tmpdir, ctx.engine.store.root)
        stack.callback(remove, tmp)
        hosts = os.path.join(tmp, "known_hosts")
        await asyncio.to_thread(Path(hosts).write_text, spec.known_ssh_hosts + "\n")
        ssh += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={hosts}"]
    else:
        ssh += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    env = {"GIT_SSH_COMMAND": shlex.join(ssh)}
    if not spec.ssh_socket_id:
        return env
    from bkcore.session.sshforward import forward_agent

    last: SessionError | None = None
    for sid in session_group(ctx):
        try:
            conn = await ctx.engine.sessions.get(sid)
            sock = await stack.enter_async_context(forward_agent(conn.caller, spec.ssh_socket_id))
        except SessionError as exc:
            last = exc
            continue
        env["SSH_AUTH_SOCK"] = sock
        return env
    why = f": {last}" if last is not None else ": no session"
    raise SourceError(f"{spec.label}: ssh agent {spec.ssh_socket_id!r} unavailable{why}")


@contextlib.asynccontextmanager
async def open_runner(ctx: SourceContext, spec: GitSpec) -> AsyncIterator[GitRunner]:
    """A :class:`GitRunner` for ``spec``'s remote, valid while the block runs."""
    home = ctx.engine.store.root / GIT_DIR / "home"
    await asyncio.to_thread(home.mkdir, mode=0o700, parents=True, exist_ok=True)
    config: dict[str, str] = {}
    allowed = "http:https:git:ssh"
    if spec.transport == "file":
        config["protocol.file.allow"] = "always"
        allowed += ":file"
    header = await auth_header(ctx, spec)
    if header is not None:
        config[f"http.{auth_scope(spec.url)}.extraheader"] = header
    async with contextlib.AsyncExitStack() as stack:
        env = {"GIT_ALLOW_PROTOCOL": allowed}
        if spec.transport == "ssh":
            env.update(await _ssh_env(ctx, spec, stack))
        yield GitRunner(str(home), config, env)
