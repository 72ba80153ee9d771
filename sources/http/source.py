"""The ``http://`` / ``https://`` source (:class:`HTTPSource`): one file from a URL.

Keying (spec/solver.md §2.3, BuildKit v0.11 ``source/http``):

* with ``http.checksum`` the key is known without any request; the file is downloaded when
  the op runs and refused (nothing committed) when its digest differs;
* otherwise the file is downloaded while keying, unless an earlier download is still current:
  the ETags remembered for the URL (:mod:`.meta`) go out in ``If-None-Match`` on a ``HEAD``
  (some servers mishandle conditional GETs), then on the ``GET``; a ``304`` (or a ``HEAD``
  answering one of those ETags) reuses that download's digest and snapshot. Without ETags the
  newest ``Last-Modified`` goes out as ``If-Modified-Since`` (BuildKit only uses ETags).

The key holds the file name, perm, uid, gid, content digest and ``Last-Modified``; the URL
itself is not part of it (same file, same key).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bkcore.errors import SourceError
from bkcore.sources.http import meta
from bkcore.sources.http.spec import HTTPSpec, file_name, key_string, parse, url_hash

if TYPE_CHECKING:
    import ssl

    import httpx

    from bkcore.solver.types import Result
    from bkcore.source import SourceContext
    from bkcore.sources.http.download import Saved

__all__ = ["HTTPInstance", "HTTPSource"]

USER_AGENT = "bkcore"
TIMEOUT = 60.0


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context per process (building one loads the CA bundle, ~0.2 s)."""
    import httpx

    return httpx.create_ssl_context()


def _client() -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(
        verify=_tls(),
        follow_redirects=True,
        timeout=httpx.Timeout(TIMEOUT, connect=30.0),
        # As Go's transport: ask for gzip only, and decode it (the file is what was served).
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip"},
    )


class HTTPInstance:
    """One http(s) op (:class:`bkcore.source.SourceInstance`)."""

    def __init__(self, spec: HTTPSpec) -> None:
        self.spec = spec
        self._lock = asyncio.Lock()
        self._key: str | None = None
        #: Digest the op's file must have (the checksum attr, or what keying found).
        self._digest = spec.checksum
        #: Snapshot found (or made) while keying, for :meth:`snapshot` to reuse.
        self._snapshot_id = ""

    # -- keying --------------------------------------------------------------------------

    async def cache_key(self, ctx: SourceContext, index: int) -> tuple[str, bool]:
        async with self._lock:
            if self._key is None:
                self._key = await self._compute_key(ctx)
            return self._key, True

    async def _compute_key(self, ctx: SourceContext) -> str:
        spec = self.spec
        if spec.checksum:
            return key_string(spec, file_name(spec), spec.checksum)
        root = ctx.engine.store.root
        uhash = url_hash(spec)
        entries = await asyncio.to_thread(meta.load, root, uhash)
        by_etag = {e.etag: e for e in entries if e.etag and e.checksum}
        headers: dict[str, str] = {}
        only_etag = ""
        by_date: meta.Entry | None = None
        if by_etag:
            headers["If-None-Match"] = ", ".join(by_etag)
            if len(by_etag) == 1:
                only_etag = next(iter(by_etag))
        else:
            by_date = next((e for e in entries if e.last_modified and e.checksum), None)
            if by_date is not None:
                headers["If-Modified-Since"] = by_date.last_modified
        async with _client() as client:
            if headers:
                found = await self._revalidate_head(client, headers, by_etag, only_etag, by_date)
                if found is not None:
                    return self._reuse(found)
            try:
                async with client.stream("GET", spec.url, headers=headers) as resp:
                    if resp.status_code == 304:
                        entry = self._not_modified(resp, by_etag, only_etag, by_date)
                        return self._reuse(entry)
                    self._check_status(resp)
                    saved = await self._save(ctx, resp)
            except SourceError:
                raise
            except Exception as exc:
                raise self._error(exc) from exc
        try:
            await self._remember(ctx, saved)
        finally:
            await saved.result.release()
        self._digest = saved.digest
        self._snapshot_id = saved.result.id
        return key_string(spec, saved.filename, saved.digest, saved.last_modified)

    async def _revalidate_head(
        self,
        client: httpx.AsyncClient,
        headers: Mapping[str, str],
        by_etag: Mapping[str, meta.Entry],
        only_etag: str,
        by_date: meta.Entry | None,
    ) -> meta.Entry | None:
        """A remembered download the server confirms on a conditional ``HEAD``, if any."""
        from bkcore.sources.http.download import etag_value

        try:
            resp = await client.head(self.spec.url, headers=headers)
        except Exception:  # a server without HEAD: fall back to the conditional GET
            return None
        if resp.status_code not in (200, 304):
            return None
        etag = etag_value(resp.headers.get("etag"))
        if resp.status_code == 304:
            if not etag and only_etag:
                etag = only_etag
            if not by_etag and by_date is not None:
                return by_date
        return by_etag.get(etag)

    def _not_modified(
        self,
        resp: httpx.Response,
        by_etag: Mapping[str, meta.Entry],
        only_etag: str,
        by_date: meta.Entry | None,
    ) -> meta.Entry:
        from bkcore.sources.http.download import etag_value

        if not by_etag and by_date is not None:
            return by_date
        etag = etag_value(resp.headers.get("etag")) or only_etag
        entry = by_etag.get(etag)
        if entry is None:
            raise SourceError(f"{self.spec.label}: invalid not-modified ETag {etag!r}")
        return entry

    def _reuse(self, entry: meta.Entry) -> str:
        self._digest = entry.checksum
        self._snapshot_id = entry.snapshot
        return key_string(self.spec, entry.filename, entry.checksum, entry.last_modified)

    # -- fetching ------------------------------------------------------------------------

    async def snapshot(self, ctx: SourceContext) -> Result:
        from bkcore.cache.results import results_for

        if self._snapshot_id:
            found = await results_for(ctx.engine.store).load(self._snapshot_id)
            if found is not None:
                return found
        async with _client() as client:
            try:
                async with client.stream("GET", self.spec.url) as resp:
                    self._check_status(resp)
                    saved = await self._save(ctx, resp, self._digest)
            except SourceError:
                raise
            except Exception as exc:
                raise self._error(exc) from exc
        try:
            await self._remember(ctx, saved)
        except BaseException:
            await saved.result.release()
            raise
        return saved.result

    async def _save(self, ctx: SourceContext, resp: httpx.Response, expected: str = "") -> Saved:
        from bkcore.sources.http.download import save

        return await save(ctx.engine.store, self.spec, resp, ctx.progress, expected)

    async def _remember(self, ctx: SourceContext, saved: Saved) -> None:
        if not (saved.etag or saved.last_modified):
            return
        entry = meta.Entry(
            saved.etag, saved.last_modified, saved.digest, saved.filename, saved.result.id
        )
        await meta.remember(ctx.engine.store.root, url_hash(self.spec), entry)

    def _check_status(self, resp: httpx.Response) -> None:
        if not 200 <= resp.status_code < 300:
            reason = f" {resp.reason_phrase}" if resp.reason_phrase else ""
            raise SourceError(
                f"{self.spec.label}: invalid response status {resp.status_code}{reason}"
            )

    def _error(self, exc: Exception) -> SourceError:
        text = str(exc).splitlines()[0] if str(exc) else ""
        return SourceError(f"{self.spec.label}: download failed: {type(exc).__name__}: {text}")


class HTTPSource:
    """:class:`bkcore.source.Source` of the ``http`` and ``https`` schemes."""

    def identify(
        self, identifier: str, attrs: Mapping[str, str], platform: str | None
    ) -> HTTPInstance:
        return HTTPInstance(parse(identifier, attrs))
