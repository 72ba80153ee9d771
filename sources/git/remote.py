"""The bare repository cached per remote, and resolving refs against the remote.

``<store root>/git/remotes/<sha256(url)[:32]>/repo.git`` receives only what a build needs:
``--depth 1`` of the resolved ref, else of the commit, else every branch and tag. Fetched
commits are pinned under ``refs/bkcore/<commit>``. A ``flock`` on the directory's ``lock``
serialises fetching and checking out across processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bkcore.sources.git.access import GIT_DIR
from bkcore.sources.git.gitcmd import GitError, GitRunner
from bkcore.sources.git.spec import is_commit, redact

if TYPE_CHECKING:
    from bkcore.progress import SharedProgress
    from bkcore.sources.git.spec import GitSpec

__all__ = ["ensure_commit", "pick_ref", "remote_dir", "resolve"]


def remote_dir(store_root: Path, url: str) -> Path:
    """The directory caching remote ``url`` (its bare ``repo.git`` and ``lock``)."""
    return store_root / GIT_DIR / "remotes" / hashlib.sha256(url.encode()).hexdigest()[:32]


def pick_ref(listing: Sequence[tuple[str, str]], ref: str) -> tuple[str, str] | None:
    """(commit, full ref name) of ``ref`` in ``git ls-remote`` output: a branch before a tag,
    an annotated tag peeled to its commit."""
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


async def resolve(
    spec: GitSpec, runner: GitRunner, progress: SharedProgress
) -> tuple[str, str | None]:
    """(commit, full ref name or None) of ``spec.ref``; a 40-hex ref needs no network."""
    if is_commit(spec.ref):
        return spec.ref, None
    ref = spec.ref_or_head
    started = time.time()
    status = f"resolving {ref}"
    progress.status(status, started=started)
    try:
        out = await runner.run(["ls-remote", "--", spec.url, ref, ref + "^{}"])
    except GitError as exc:
        raise spec.error("cannot list the remote's refs", exc.detail) from None
    listing = []
    for line in out.decode(errors="replace").splitlines():
        sha, _, name = line.partition("\t")
        if sha and name:
            listing.append((sha.strip(), name.strip()))
    picked = pick_ref(listing, ref)
    if picked is None:
        raise spec.error("ref not found")
    progress.status(status, started=started, completed=time.time())
    return picked


async def _has_commit(runner: GitRunner, repo: str, commit: str) -> bool:
    try:
        await runner.run(["--git-dir", repo, "cat-file", "-e", f"{commit}^{{commit}}"])
    except GitError:
        return False
    return True


async def ensure_commit(
    spec: GitSpec,
    runner: GitRunner,
    progress: SharedProgress,
    repo: str,
    commit: str,
    fullref: str | None,
) -> None:
    """Make sure the bare ``repo`` (created when missing) holds ``commit``; hold the lock."""
    if not await asyncio.to_thread(os.path.exists, os.path.join(repo, "HEAD")):
        try:
            await runner.run(["init", "-q", "--bare", "--template=", "--", repo])
        except GitError as exc:
            raise spec.error("cannot create the local cache repository", exc.detail) from None
        await asyncio.to_thread(Path(repo, "bkcore-remote").write_text, redact(spec.url) + "\n")
    if await _has_commit(runner, repo, commit):
        return
    fetch = ["--git-dir", repo, "fetch", "-q", "--no-tags", "--force"]
    attempts: list[list[str]] = []
    if fullref is not None and fullref != "HEAD":
        attempts.append([*fetch, "--depth", "1", "--", spec.url, fullref])
    attempts.append([*fetch, "--depth", "1", "--", spec.url, commit])
    everything = ["+refs/heads/*:refs/remotes/origin/heads/*", "+refs/tags/*:refs/tags/*"]
    shallow = await asyncio.to_thread(os.path.exists, os.path.join(repo, "shallow"))
    attempts.append([*fetch, *(["--unshallow"] if shallow else []), "--", spec.url, *everything])
    started = time.time()
    status = f"fetching {commit[:12]}"
    progress.status(status, started=started)
    last: GitError | None = None
    for args in attempts:
        try:
            await runner.run(args)
        except GitError as exc:
            last = exc
            continue
        last = None
        if await _has_commit(runner, repo, commit):
            break
    else:
        if last is not None:  # even fetching everything failed
            raise spec.error(f"cannot fetch commit {commit}", last.detail)
        raise spec.error(f"commit {commit} not found in the remote")
    try:
        await runner.run(["--git-dir", repo, "update-ref", f"refs/bkcore/{commit}", commit])
    except GitError as exc:
        raise spec.error("cannot record the fetched commit", exc.detail) from None
    progress.status(status, started=started, completed=time.time())
