"""One registry request: host options (http/https), auth challenges, bounded retries."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from bkcore.errors import SourceError
from bkcore.registry_client.auth import (
    BearerToken,
    Challenge,
    CredentialsCallback,
    basic_header,
    call_credentials,
    parse_challenges,
    scope_for,
)
from bkcore.registry_client.reference import ImageReference, is_loopback_host

#: Request bodies: bytes, or a factory giving a fresh async stream for every attempt.
Body = bytes | Callable[[], AsyncIterator[bytes]] | None

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class HostOptions:
    """How to reach one registry host (``[registry."host:port"]`` in the config file).

    ``http=None`` means: plain HTTP for loopback hosts, HTTPS otherwise. ``insecure`` skips
    TLS verification; ``ca_file`` adds a CA bundle.
    """

    http: bool | None = None
    insecure: bool = False
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff for 5xx/429 replies and connection errors."""

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 3.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.base_delay * (2**attempt)))


class Transport:
    """Sends registry requests for many hosts; owns their httpx clients and auth state."""

    def __init__(
        self,
        credentials: CredentialsCallback | None = None,
        hosts: Mapping[str, HostOptions] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        user_agent: str = "bkcore",
    ) -> None:
        self._credentials = credentials
        self._hosts = dict(hosts or {})
        self.retry = retry or RetryPolicy()
        self._timeout = timeout
        self._user_agent = user_agent
        self._clients: dict[tuple[bool, str | None], httpx.AsyncClient] = {}
        self._challenges: dict[str, Challenge] = {}
        self._basic: dict[str, tuple[str, str]] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], BearerToken] = {}
        self._token_locks: dict[tuple[str, tuple[str, ...]], asyncio.Lock] = {}

    # -- hosts ----------------------------------------------------------------------------
    def options(self, host: str) -> HostOptions:
        return self._hosts.get(host, HostOptions())

    def base_url(self, host: str) -> str:
        opts = self.options(host)
        plain = opts.http if opts.http is not None else is_loopback_host(host)
        return f"{'http' if plain else 'https'}://{host}"

    def _client(self, host: str) -> httpx.AsyncClient:
        opts = self.options(host)
        key = (opts.insecure, opts.ca_file)
        client = self._clients.get(key)
        if client is None:
            verify: bool | ssl.SSLContext = not opts.insecure
            if opts.ca_file and not opts.insecure:
                verify = ssl.create_default_context(cafile=opts.ca_file)
            client = httpx.AsyncClient(
                verify=verify,
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 15.0)),
                follow_redirects=True,
                # Digests cover the stored bytes: ask for them unencoded.
                headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
            )
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    # -- auth -----------------------------------------------------------------------------
    async def _authorization(self, ref: ImageReference, scopes: tuple[str, ...]) -> str | None:
        host = ref.endpoint_host
        challenge = self._challenges.get(host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self._basic.get(host)
            return basic_header(creds) if creds else None
        key = (host, scopes)
        # One token request per scope even when many layers start at once.
        async with self._token_locks.setdefault(key, asyncio.Lock()):
            token = self._tokens.get(key)
            if token is None or not token.valid():
                token = await self._fetch_token(ref, challenge, scopes)
                self._tokens[key] = token
        return f"Bearer {token.token}"

    async def _fetch_token(
        self, ref: ImageReference, challenge: Challenge, scopes: tuple[str, ...]
    ) -> BearerToken:
        realm = challenge.params.get("realm")
        if not realm:
            raise SourceError(f"{ref}: bearer challenge from {ref.endpoint_host} has no realm")
        params: list[tuple[str, str]] = []
        if "service" in challenge.params:
            params.append(("service", challenge.params["service"]))
        params.extend(("scope", s) for s in scopes)
        creds = await call_credentials(self._credentials, ref.domain)
        headers = {"Authorization": basic_header(creds)} if creds else {}
        resp = await self._send_retrying(ref, "GET", realm, headers, None, params=params)
        try:
            if resp.status_code in (401, 403):
                who = f"user {creds[0]!r}" if creds else "anonymous access"
                raise SourceError(
                    f"{ref}: token server {realm} rejected {who} "
                    f"({resp.status_code} {resp.reason_phrase})"
                )
            if resp.status_code != 200:
                raise SourceError(f"{ref}: token server {realm} answered {resp.status_code}")
            await resp.aread()
            try:
                body = json.loads(resp.content)
                token = str(body.get("token") or body.get("access_token") or "")
                expires_in = float(body.get("expires_in") or 60)
            except (ValueError, AttributeError) as exc:
                raise SourceError(f"{ref}: token server {realm} sent invalid JSON") from exc
            if not token:
                raise SourceError(f"{ref}: token server {realm} sent no token")
        finally:
            await resp.aclose()
        return BearerToken(token, time.monotonic() + max(1.0, expires_in - 5.0))

    async def _on_unauthorized(
        self, ref: ImageReference, resp: httpx.Response, sent_auth: str | None
    ) -> None:
        """Record the challenge of a 401 so the next attempt can authenticate; raise if not."""
        host = ref.endpoint_host
        challenges = parse_challenges(resp.headers.get("WWW-Authenticate", ""))
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            raise SourceError(f"{ref}: {host} answered 401 Unauthorized without a usable challenge")
        previous = self._challenges.get(host)
        self._challenges[host] = chosen
        if chosen.scheme == "basic":
            creds = await call_credentials(self._credentials, ref.domain)
            if creds is None:
                raise SourceError(
                    f"{ref}: {host} requires authentication and no credentials are configured"
                )
            if sent_auth is not None and sent_auth == basic_header(creds):
                raise SourceError(
                    f"{ref}: {host} rejected the credentials of user {creds[0]!r} "
                    "(401 Unauthorized)"
                )
            self._basic[host] = creds
        elif sent_auth is not None and sent_auth.startswith("Bearer ") and previous == chosen:
            raise SourceError(f"{ref}: {host} denied access to {ref.repository} (401 Unauthorized)")
        else:
            for key in [k for k in self._tokens if k[0] == host]:
                del self._tokens[key]

    # -- requests -------------------------------------------------------------------------
    async def _send_retrying(
        self,
        ref: ImageReference,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
        params: Sequence[tuple[str, str]] = (),
    ) -> httpx.Response:
        """Send with bounded retries; return the (unread, streaming) final response."""
        client = self._client(ref.endpoint_host)
        attempt = 0
        while True:
            content: bytes | AsyncIterator[bytes] | None = body() if callable(body) else body
            request = client.build_request(
                method, url, headers=dict(headers), content=content, params=list(params) or None
            )
            try:
                resp = await client.send(request, stream=True)
            except httpx.TransportError as exc:
                if attempt + 1 >= self.retry.attempts:
                    raise SourceError(
                        f"{ref}: {method} {request.url} failed after {attempt + 1} attempts: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
            else:
                if resp.status_code not in _RETRY_STATUS or attempt + 1 >= self.retry.attempts:
                    return resp
                await resp.aclose()
            await asyncio.sleep(self.retry.delay(attempt))
            attempt += 1

    async def request(
        self,
        ref: ImageReference,
        method: str,
        url: str,
        *,
        actions: str = "pull",
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        extra_scopes: Sequence[str] = (),
    ) -> httpx.Response:
        """Send an authenticated request; the caller reads (or streams) and closes the reply."""
        scopes = (scope_for(ref.repository, actions), *extra_scopes)
        for _ in range(3):
            auth = await self._authorization(ref, scopes)
            hdrs = dict(headers or {})
            if auth:
                hdrs["Authorization"] = auth
            resp = await self._send_retrying(ref, method, url, hdrs, body)
            if resp.status_code != 401:
                return resp
            await resp.aclose()
            await self._on_unauthorized(ref, resp, auth)
        raise SourceError(f"{ref}: {ref.endpoint_host} keeps answering 401 Unauthorized")
