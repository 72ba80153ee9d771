"""The ``git://`` source (:class:`GitSource`): real git, one bare repository per remote.

Keying (spec/solver.md §2.3): a ref that is a 40-hex commit is the commit, with no network;
anything else is resolved with ``git ls-remote`` (a branch before a tag; an annotated tag
names the commit it points at). Key = ``<commit>[.git][:<subdir>]``; the URL and auth are
not part of it, so one commit reached by branch, tag or id is one cache entry.

Fetching (:mod:`.remote`) and checking out (:mod:`.checkout`) run under the remote's lock,
with git's environment from :mod:`.access` (auth header, SSH, allowed transports); the
checkout is committed as a new snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bkcore.filelock import locked
from bkcore.sources.git.access import open_runner, sweep_tmp
from bkcore.sources.git.checkout import checkout
from bkcore.sources.git.remote import ensure_commit, remote_dir, resolve
from bkcore.sources.git.spec import GitSpec, key_string, parse

if TYPE_CHECKING:
    from bkcore.solver.types import Result
    from bkcore.source import SourceContext

__all__ = ["GitInstance", "GitSource"]


class GitInstance:
    """One ``git://`` op (:class:`bkcore.source.SourceInstance`)."""

    def __init__(self, spec: GitSpec) -> None:
        self.spec = spec
        self._resolved: tuple[str, str | None] | None = None
        self._lock = asyncio.Lock()

    async def resolve(self, ctx: SourceContext) -> tuple[str, str | None]:
        """(commit, full ref name or None), resolved once per instance."""
        async with self._lock:
            if self._resolved is None:
                async with open_runner(ctx, self.spec) as runner:
                    self._resolved = await resolve(self.spec, runner, ctx.progress)
            return self._resolved

    async def cache_key(self, ctx: SourceContext, index: int) -> tuple[str, bool]:
        commit, _ = await self.resolve(ctx)
        return key_string(self.spec, commit), True

    async def snapshot(self, ctx: SourceContext) -> Result:
        from bkcore.cache.results import commit_result, prepare

        commit, fullref = await self.resolve(ctx)
        store = ctx.engine.store
        base = remote_dir(store.root, self.spec.url)
        await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(sweep_tmp, store.root)
        repo = str(base / "repo.git")
        async with open_runner(ctx, self.spec) as runner, locked(base / "lock"):
            await ensure_commit(self.spec, runner, ctx.progress, repo, commit, fullref)
            mutable = await prepare(store, None, f"git source {self.spec.label}")
            try:
                dest = await asyncio.to_thread(mutable.mount)
                await checkout(
                    self.spec, runner, ctx.progress, store.root, repo, commit, fullref, str(dest)
                )
            except BaseException:
                await asyncio.shield(asyncio.to_thread(mutable.discard))
                raise
            return await commit_result(store, mutable)


class GitSource:
    """:class:`bkcore.source.Source` of the ``git`` scheme."""

    def identify(
        self, identifier: str, attrs: Mapping[str, str], platform: str | None
    ) -> GitInstance:
        return GitInstance(parse(identifier, attrs))
