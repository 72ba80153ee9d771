"""The ``git://`` source: real git, one bare repository cached per remote.

Keying (spec/solver.md §2.3): a ref that is a 40-hex commit is the commit; anything else is
resolved with ``git ls-remote`` (branch first, then tag; an annotated tag names the commit it
points at). Key = ``<commit>[.git][:<subdir>]``.

Fetching: under ``<store root>/git/remotes/<sha256(url)>/repo.git`` a bare repository per
remote receives only what is needed (``--depth 1`` of the resolved ref, else of the commit,
else everything), serialised across processes by a ``flock``. The commit is then checked out
into a new snapshot: straight from the bare repository when neither ``.git`` nor submodules
are wanted, else through a real work tree (``git submodule update --init --recursive``) whose
``.git`` is dropped unless ``git.keepgitdir``. With a subdirectory only that directory is
copied into the snapshot.

Auth: for http(s) remotes the job's session secret ``git.authheadersecret`` (a whole
``Authorization`` value) or ``git.authtokensecret`` (a token, sent as basic
``x-access-token``) becomes ``http.<scheme://host/>.extraheader``, passed to git only in its
environment. A missing secret means no auth. SSH remotes use ``git.knownsshhosts`` (strict
host key checking) and the session's forwarded agent ``git.mountsshsock``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import os
import shlex
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bkcore.errors import SessionError, SourceError
from bkcore.sources.git.gitcmd import GitError, GitRunner
from bkcore.sources.git.spec import GitSpec, is_commit, key_string, parse, redact

if TYPE_CHECKING:
    from bkcore.solver.types import Result
    from bkcore.source import SourceContext

__all__ = ["GitInstance", "GitSource", "remote_dir"]

GIT_DIR = "git"
_LOCK_POLL = 0.05


def remote_dir(store_root: Path, url: str) -> Path:
    """The directory caching remote ``url`` (its bare ``repo.git`` and ``lock``)."""
    return store_root / GIT_DIR / "remotes" / hashlib.sha256(url.encode()).hexdigest()[:32]


@contextlib.asynccontextmanager
async def _locked(path: Path) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``path`` (polled, so waiting stays cancellable)."""
    fd = await asyncio.to_thread(os.open, path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(_LOCK_POLL)
        yield
    finally:
        os.close(fd)


def _session_group(ctx: SourceContext) -> list[str]:
    out: list[str] = []
    for job in ctx.jobs():
        sid = job.values.get("session")
        if isinstance(sid, str) and sid and sid not in out:
            out.append(sid)
    return out


def _auth_scope(url: str) -> str:
    """``scheme://host[:port]/`` of an http(s) URL, without credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/"


def _strip_credentials(url: str) -> str:
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl()


def _pick_ref(listing: Sequence[tuple[str, str]], ref: str) -> tuple[str, str] | None:
    """(commit, full ref name) of ``ref`` in ``git ls-remote`` output, peeled tags preferred."""
    names: dict[str, str] = {}
    for sha, name in listing:
        names.setdefault(name, sha)
    if ref.startswith("refs/") or ref == "HEAD":
        candidates = [ref]
    else:
        candidates = [f"refs/heads/{ref}", f"refs/tags/{ref}", ref]
        candidates += [n for n in names if n.endswith("/" + ref) and n not in candidates]
    for name in candidates:
        if name in names:
            return names.get(name + "^{}", names[name]), name
    return None


def _drop_git_entries(root: str) -> None:
    """Remove every ``.git`` entry below ``root`` (the repository's and submodules' links;
    git never checks out a path named ``.git``)."""
    from bkcore.cache.fsutil import remove

    for dirpath, dirnames, filenames in os.walk(root):
        if ".git" in dirnames:
            dirnames.remove(".git")
            remove(os.path.join(dirpath, ".git"))
        if ".git" in filenames:
            os.unlink(os.path.join(dirpath, ".git"))


def _copy_subdir(work: str, subdir: str, dest: str) -> bool:
    """Copy ``work/subdir`` (resolved inside ``work``) into ``dest``; False when it is not a
    directory."""
    from bkcore.cache.fsutil import copy_tree
    from bkcore.fs.securepath import resolve

    try:
        src = resolve(work, subdir, follow_final=True)
    except Exception:
        return False
    if not os.path.isdir(src) or os.path.islink(src):
        return False
    copy_tree(Path(src), Path(dest))
    return True


class GitInstance:
    """One ``git://`` op (:class:`bkcore.source.SourceInstance`)."""

    def __init__(self, spec: GitSpec) -> None:
        self.spec = spec
        self._resolved: tuple[str, str | None] | None = None
        self._lock = asyncio.Lock()

    def _fail(self, what: str, exc: GitError | None = None) -> SourceError:
        detail = f" ({redact(exc.detail)})" if exc is not None and exc.detail else ""
        return SourceError(f"{self.spec.label}: {what}{detail}")

    # -- environment ----------------------------------------------------------------------

    async def _secret(self, ctx: SourceContext, group: list[str], secret_id: str) -> bytes:
        from bkcore.session.secrets import get_secret

        try:
            return await ctx.engine.sessions.any(
                group, lambda conn: get_secret(conn.caller, secret_id)
            )
        except SessionError:  # not found (or no session serving it): no auth
            return b""

    async def _auth_header(self, ctx: SourceContext) -> str | None:
        group = _session_group(ctx)
        if not group or self.spec.transport != "http":
            return None
        header = (await self._secret(ctx, group, self.spec.header_secret)).strip()
        if header:
            return "Authorization: " + header.decode(errors="replace")
        token = (await self._secret(ctx, group, self.spec.token_secret)).strip()
        if token:
            basic = base64.b64encode(b"x-access-token:" + token).decode()
            return "Authorization: basic " + basic
        return None

    @contextlib.asynccontextmanager
    async def _runner(self, ctx: SourceContext) -> AsyncIterator[GitRunner]:
        base = ctx.engine.store.root / GIT_DIR
        home = base / "home"
        await asyncio.to_thread(home.mkdir, mode=0o700, parents=True, exist_ok=True)
        config: dict[str, str] = {}
        if self.spec.transport == "file":
            config["protocol.file.allow"] = "always"
        header = await self._auth_header(ctx)
        if header is not None:
            config[f"http.{_auth_scope(self.spec.url)}.extraheader"] = header
        async with contextlib.AsyncExitStack() as stack:
            # transports git may use, submodules included (never ext::, fd:: ...)
            allowed = "http:https:git:ssh" + (":file" if self.spec.transport == "file" else "")
            env: dict[str, str] = {"GIT_ALLOW_PROTOCOL": allowed}
            if self.spec.transport == "ssh":
                env.update(await self._ssh_env(ctx, stack, base))
            yield GitRunner(str(home), config, env)

    async def _ssh_env(
        self, ctx: SourceContext, stack: contextlib.AsyncExitStack, base: Path
    ) -> Mapping[str, str]:
        ssh = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes"]
        if self.spec.known_ssh_hosts:
            tmp = await asyncio.to_thread(self._tmpdir, base)
            stack.callback(_remove, tmp)
            hosts = os.path.join(tmp, "known_hosts")
            await asyncio.to_thread(Path(hosts).write_text, self.spec.known_ssh_hosts + "\n")
            ssh += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={hosts}"]
        else:
            ssh += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        env = {"GIT_SSH_COMMAND": shlex.join(ssh)}
        if self.spec.ssh_socket_id:
            from bkcore.session.sshforward import forward_agent

            last: SessionError | None = None
            for sid in _session_group(ctx):
                try:
                    conn = await ctx.engine.sessions.get(sid)
                    sock = await stack.enter_async_context(
                        forward_agent(conn.caller, self.spec.ssh_socket_id)
                    )
                except SessionError as exc:
                    last = exc
                    continue
                env["SSH_AUTH_SOCK"] = sock
                break
            else:
                why = f": {last}" if last is not None else ""
                raise SourceError(
                    f"{self.spec.label}: ssh agent {self.spec.ssh_socket_id!r} unavailable{why}"
                )
        return env

    @staticmethod
    def _tmpdir(base: Path) -> str:
        tmp = base / "tmp"
        tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        return tempfile.mkdtemp(dir=tmp)

    # -- keying ---------------------------------------------------------------------------

    async def _resolve(self, ctx: SourceContext) -> tuple[str, str | None]:
        async with self._lock:
            if self._resolved is None:
                self._resolved = await self._ls_remote(ctx)
            return self._resolved

    async def _ls_remote(self, ctx: SourceContext) -> tuple[str, str | None]:
        ref = self.spec.ref
        if is_commit(ref):
            return ref, None
        started = time.time()
        status = f"resolving {self.spec.ref_or_head}"
        ctx.progress.status(status, started=started)
        async with self._runner(ctx) as runner:
            try:
                ref = self.spec.ref_or_head
                out = await runner.run(["ls-remote", "--", self.spec.url, ref, ref + "^{}"])
            except GitError as exc:
                raise self._fail("cannot list the remote's refs", exc) from None
        listing = []
        for line in out.decode(errors="replace").splitlines():
            sha, _, name = line.partition("\t")
            if sha and name:
                listing.append((sha.strip(), name.strip()))
        picked = _pick_ref(listing, self.spec.ref_or_head)
        if picked is None:
            raise self._fail("ref not found")
        ctx.progress.status(status, started=started, completed=time.time())
        commit, name = picked
        return commit, name

    async def cache_key(self, ctx: SourceContext, index: int) -> tuple[str, bool]:
        commit, _ = await self._resolve(ctx)
        return key_string(self.spec, commit), True

    # -- fetching -------------------------------------------------------------------------

    async def snapshot(self, ctx: SourceContext) -> Result:
        from bkcore.cache.results import commit_result, prepare

        commit, fullref = await self._resolve(ctx)
        store = ctx.engine.store
        base = remote_dir(store.root, self.spec.url)
        await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
        repo = str(base / "repo.git")
        async with self._runner(ctx) as runner, _locked(base / "lock"):
            await self._fetch(ctx, runner, repo, commit, fullref)
            mutable = await prepare(store, None, f"git source {self.spec.label}")
            try:
                dest = await asyncio.to_thread(mutable.mount)
                await self._checkout(ctx, runner, repo, commit, fullref, str(dest))
            except BaseException:
                await asyncio.shield(asyncio.to_thread(mutable.discard))
                raise
            return await commit_result(store, mutable)

    async def _has_commit(self, runner: GitRunner, repo: str, commit: str) -> bool:
        try:
            await runner.run(["--git-dir", repo, "cat-file", "-e", f"{commit}^{{commit}}"])
        except GitError:
            return False
        return True

    async def _fetch(
        self, ctx: SourceContext, runner: GitRunner, repo: str, commit: str, fullref: str | None
    ) -> None:
        if not await asyncio.to_thread(os.path.exists, os.path.join(repo, "HEAD")):
            try:
                await runner.run(["init", "-q", "--bare", "--template=", "--", repo])
            except GitError as exc:
                raise self._fail("cannot create the local cache repository", exc) from None
            await asyncio.to_thread(Path(repo, "bkcore-remote").write_text, redact(self.spec.url))
        if await self._has_commit(runner, repo, commit):
            return
        fetch = ["--git-dir", repo, "fetch", "-q", "--no-tags", "--force"]
        attempts: list[list[str]] = []
        if fullref is not None and fullref != "HEAD":
            attempts.append([*fetch, "--depth", "1", "--", self.spec.url, fullref])
        attempts.append([*fetch, "--depth", "1", "--", self.spec.url, commit])
        everything = [
            "+refs/heads/*:refs/remotes/origin/heads/*",
            "+refs/tags/*:refs/remotes/origin/tags/*",
        ]
        shallow = ["--unshallow"] if os.path.exists(os.path.join(repo, "shallow")) else []
        attempts.append([*fetch, *shallow, "--", self.spec.url, *everything])
        started = time.time()
        status = f"fetching {commit[:12]}"
        ctx.progress.status(status, started=started)
        last: GitError | None = None
        for args in attempts:
            try:
                await runner.run(args)
            except GitError as exc:
                last = exc
                continue
            if await self._has_commit(runner, repo, commit):
                break
        else:
            if last is not None and "not found" not in last.detail:
                raise self._fail(f"cannot fetch commit {commit}", last)
            raise self._fail(f"commit {commit} not found in the remote")
        try:
            await runner.run(["--git-dir", repo, "update-ref", f"refs/bkcore/{commit}", commit])
        except GitError as exc:
            raise self._fail("cannot record the fetched commit", exc) from None
        ctx.progress.status(status, started=started, completed=time.time())

    async def _checkout(
        self,
        ctx: SourceContext,
        runner: GitRunner,
        repo: str,
        commit: str,
        fullref: str | None,
        dest: str,
    ) -> None:
        tmp = await asyncio.to_thread(self._tmpdir, ctx.engine.store.root / GIT_DIR)
        try:
            work = os.path.join(tmp, "work") if self.spec.subdir else dest
            if self.spec.subdir:
                await asyncio.to_thread(os.mkdir, work, 0o755)
            started = time.time()
            status = f"checking out {commit[:12]}"
            ctx.progress.status(status, started=started)
            has_modules = await self._has_path(runner, repo, commit, ".gitmodules")
            if self.spec.keep_git_dir or has_modules:
                await self._worktree_checkout(ctx, runner, repo, commit, fullref, work)
            else:
                await self._plain_checkout(runner, repo, commit, work, tmp)
            if not self.spec.keep_git_dir:
                await asyncio.to_thread(_drop_git_entries, work)
            if self.spec.subdir and not await asyncio.to_thread(
                _copy_subdir, work, self.spec.subdir, dest
            ):
                raise self._fail(f"subdirectory {self.spec.subdir!r} not found")
            ctx.progress.status(status, started=started, completed=time.time())
        finally:
            await asyncio.shield(asyncio.to_thread(_remove, tmp))

    async def _has_path(self, runner: GitRunner, repo: str, commit: str, path: str) -> bool:
        try:
            await runner.run(["--git-dir", repo, "cat-file", "-e", f"{commit}:{path}"])
        except GitError:
            return False
        return True

    async def _plain_checkout(
        self, runner: GitRunner, repo: str, commit: str, work: str, tmp: str
    ) -> None:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        git = ["--git-dir", repo, "--work-tree", work, "-c", "core.bare=false"]
        try:
            await runner.run([*git, "read-tree", commit], env=env)
            await runner.run([*git, "checkout-index", "-a", "-f"], env=env)
        except GitError as exc:
            raise self._fail(f"cannot check out {commit}", exc) from None

    async def _worktree_checkout(
        self,
        ctx: SourceContext,
        runner: GitRunner,
        repo: str,
        commit: str,
        fullref: str | None,
        work: str,
    ) -> None:
        git = ["-C", work]
        try:
            await runner.run(["init", "-q", "--template=", "--", work])
            pinned = f"refs/bkcore/{commit}"
            await runner.run(
                [*git, "fetch", "-q", "--no-tags", "--depth", "1", "--", repo, pinned],
                env={"GIT_ALLOW_PROTOCOL": "file"},  # the local cache repository
            )
            branch = fullref.removeprefix("refs/heads/") if fullref else None
            checkout = [*git, "-c", "advice.detachedHead=false", "checkout", "-q"]
            if branch is not None and fullref != branch:
                await runner.run([*checkout, "-B", branch, commit])
            else:
                await runner.run([*checkout, "--detach", commit])
            url = _strip_credentials(self.spec.url)
            await runner.run([*git, "remote", "add", "--", "origin", url])
        except GitError as exc:
            raise self._fail(f"cannot check out {commit}", exc) from None
        if await asyncio.to_thread(os.path.exists, os.path.join(work, ".gitmodules")):
            started = time.time()
            ctx.progress.status("updating submodules", started=started)
            update = [*git, "submodule", "update", "--init", "--recursive"]
            try:
                await runner.run([*update, "--depth", "1"])
            except GitError:
                try:
                    await runner.run(update)
                except GitError as exc:
                    raise self._fail("submodule update failed", exc) from None
            ctx.progress.status("updating submodules", started=started, completed=time.time())


def _remove(path: str) -> None:
    from bkcore.cache.fsutil import remove

    remove(path)


class GitSource:
    """:class:`bkcore.source.Source` of the ``git`` scheme."""

    def identify(
        self, identifier: str, attrs: Mapping[str, str], platform: str | None
    ) -> GitInstance:
        return GitInstance(parse(identifier, attrs))
