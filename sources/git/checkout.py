"""Checking a fetched commit out of the cached bare repository into a snapshot directory.

Without ``.git`` and submodules the tree is written straight from the bare repository
(``read-tree`` + ``checkout-index`` with a private index). Otherwise a real work tree is made
(``git init``, fetch of the pinned commit from the cache, checkout, ``origin`` set to the
remote so relative submodule URLs resolve, ``git submodule update --init --recursive``), and
its ``.git`` entries are dropped unless ``git.keepgitdir``. With a subdirectory the commit is
checked out in a scratch directory and only that directory is copied into the snapshot.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bkcore.sources.git.access import remove, strip_credentials, tmpdir
from bkcore.sources.git.gitcmd import GitError, GitRunner

if TYPE_CHECKING:
    from bkcore.progress import SharedProgress
    from bkcore.sources.git.spec import GitSpec

__all__ = ["checkout"]


def drop_git_entries(root: str) -> None:
    """Remove every ``.git`` entry below ``root`` (the repository's and the submodules' links;
    git never checks out a path named ``.git`` itself)."""
    for dirpath, dirnames, filenames in os.walk(root):
        if ".git" in dirnames:
            dirnames.remove(".git")
            remove(os.path.join(dirpath, ".git"))
        if ".git" in filenames:
            os.unlink(os.path.join(dirpath, ".git"))


def copy_subdir(work: str, subdir: str, dest: str) -> bool:
    """Copy ``work/subdir`` (resolved inside ``work``, symlinks included) into ``dest``;
    False when that is not a directory."""
    from bkcore.cache.fsutil import copy_tree
    from bkcore.fs.securepath import resolve

    try:
        src = resolve(work, subdir, follow_final=True)
    except Exception:  # a symlink loop: not a directory either
        return False
    if os.path.islink(src) or not os.path.isdir(src):
        return False
    copy_tree(Path(src), Path(dest))
    return True


async def _has_path(runner: GitRunner, repo: str, commit: str, path: str) -> bool:
    try:
        await runner.run(["--git-dir", repo, "cat-file", "-e", f"{commit}:{path}"])
    except GitError:
        return False
    return True


async def _plain(runner: GitRunner, repo: str, commit: str, work: str, tmp: str) -> None:
    env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
    git = ["--git-dir", repo, "--work-tree", work, "-c", "core.bare=false"]
    await runner.run([*git, "read-tree", commit], env=env)
    await runner.run([*git, "checkout-index", "-a", "-f"], env=env)


async def _worktree(
    spec: GitSpec, runner: GitRunner, repo: str, commit: str, fullref: str | None, work: str
) -> None:
    git = ["-C", work]
    await runner.run(["init", "-q", "--template=", "--", work])
    pinned = f"refs/bkcore/{commit}"
    await runner.run(
        [*git, "fetch", "-q", "--no-tags", "--depth", "1", "--", repo, pinned],
        env={"GIT_ALLOW_PROTOCOL": "file"},  # the local cache repository only
    )
    checkout = [*git, "-c", "advice.detachedHead=false", "checkout", "-q"]
    if fullref is not None and fullref.startswith("refs/heads/"):
        await runner.run([*checkout, "-B", fullref.removeprefix("refs/heads/"), commit])
    else:
        await runner.run([*checkout, "--detach", commit])
    await runner.run([*git, "remote", "add", "--", "origin", strip_credentials(spec.url)])


async def _submodules(
    spec: GitSpec, runner: GitRunner, progress: SharedProgress, work: str
) -> None:
    started = time.time()
    progress.status("updating submodules", started=started)
    update = ["-C", work, "submodule", "update", "--init", "--recursive"]
    try:
        await runner.run([*update, "--depth", "1"])
    except GitError:
        try:  # servers that refuse shallow fetches of arbitrary commits
            await runner.run(update)
        except GitError as exc:
            raise spec.error("submodule update failed", exc.detail) from None
    progress.status("updating submodules", started=started, completed=time.time())


async def checkout(
    spec: GitSpec,
    runner: GitRunner,
    progress: SharedProgress,
    store_root: Path,
    repo: str,
    commit: str,
    fullref: str | None,
    dest: str,
) -> None:
    """Write ``commit`` (of the bare ``repo``) into the empty directory ``dest``."""
    tmp = await asyncio.to_thread(tmpdir, store_root)
    try:
        work = dest
        if spec.subdir:
            work = os.path.join(tmp, "work")
            await asyncio.to_thread(os.mkdir, work, 0o755)
        started = time.time()
        status = f"checking out {commit[:12]}"
        progress.status(status, started=started)
        modules = await _has_path(runner, repo, commit, ".gitmodules")
        try:
            if spec.keep_git_dir or modules:
                await _worktree(spec, runner, repo, commit, fullref, work)
            else:
                await _plain(runner, repo, commit, work, tmp)
        except GitError as exc:
            raise spec.error(f"cannot check out {commit}", exc.detail) from None
        if modules:
            await _submodules(spec, runner, progress, work)
        if not spec.keep_git_dir:
            await asyncio.to_thread(drop_git_entries, work)
        if spec.subdir and not await asyncio.to_thread(copy_subdir, work, spec.subdir, dest):
            raise spec.error(f"subdirectory {spec.subdir!r} not found")
        progress.status(status, started=started, completed=time.time())
    finally:
        await asyncio.shield(asyncio.to_thread(remove, tmp))
