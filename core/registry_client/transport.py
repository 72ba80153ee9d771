"""Registry requests: connections per host configuration, auth challenges, mirrors, retries.

Two halves with different lifetimes:

* :class:`Connections`: the hosts configuration and one httpx client (one SSL context) per
  distinct TLS setting. Shared by every op of an engine: building an SSL context costs about
  0.2 s, so it is done once, not once per image op.
* :class:`AuthState`: the auth of one credentials source (one build session): the challenge
  each host sent, basic credentials and bearer tokens per ``(host, scopes)``. Memory only;
  tokens are reused until they expire; nothing is written anywhere.

:class:`Transport` pairs one of each and sends requests: mirrors first for pulls, then the
origin; a 401 is answered from its ``WWW-Authenticate`` challenge (basic or bearer).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from bkcore.errors import SourceError
from bkcore.registry_client.auth import (
    BearerToken,
    Challenge,
    Credentials,
    CredentialsCallback,
    basic_header,
    call_credentials,
    parse_challenges,
    scope_for,
)
from bkcore.registry_client.hosts import HostOptions
from bkcore.registry_client.reference import DOCKER_HUB_ENDPOINT, ImageReference, is_loopback_host

__all__ = ["AuthState", "Body", "Connections", "HostOptions", "RetryPolicy", "Transport"]

#: Request bodies: bytes, or a factory giving a fresh async stream for every attempt.
Body = bytes | Callable[[], AsyncIterator[bytes]] | None

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: ``client_id`` sent to OAuth2 token endpoints (BuildKit sends the same).
CLIENT_ID = "buildkit-client"


class DeferredCAContext(ssl.SSLContext):
    """A verifying TLS client context that loads its CA certificates at its first handshake.

    httpx's default context loads the whole CA bundle when a client is made (0.1-0.3 s of CPU
    at every ``bkcore build`` start); a build that only talks to plain-HTTP registries
    (loopback, ``http = true``) never needs it. The CAs are httpx's defaults for
    ``verify=True``: ``$SSL_CERT_FILE``, else ``$SSL_CERT_DIR``, else certifi's bundle.
    Hostname checks and ``CERT_REQUIRED`` are on from the start, so nothing is trusted before
    the CAs are there.
    """

    ca_loaded: bool

    def __new__(cls) -> DeferredCAContext:
        ctx = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)
        ctx.ca_loaded = False
        return ctx

    def _load_ca(self) -> None:
        if self.ca_loaded:
            return
        if os.environ.get("SSL_CERT_FILE"):
            self.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
        elif os.environ.get("SSL_CERT_DIR"):
            self.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
        else:
            import certifi

            self.load_verify_locations(cafile=certifi.where())
        self.ca_loaded = True

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load_ca()
        return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_ca()
        return super().wrap_socket(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff for 5xx/429 replies and connection errors."""

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 3.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.base_delay * (2**attempt)))


class Connections:
    """Host options and the httpx clients for them (one per TLS setting), shareable."""

    def __init__(
        self,
        hosts: Mapping[str, HostOptions] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        user_agent: str = "bkcore",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network for every host (tests: ``httpx.MockTransport``)."""
        self.hosts = dict(hosts or {})
        self._transport = transport
        self.retry = retry or RetryPolicy()
        self._timeout = timeout
        self._user_agent = user_agent
        self._clients: dict[tuple[bool, tuple[str, ...]], httpx.AsyncClient] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: How many httpx clients (SSL contexts) were made; for tests and benchmarks.
        self.clients_made = 0

    def options(self, host: str) -> HostOptions:
        """The options of ``host``; Docker Hub's API host also matches ``docker.io``."""
        opts = self.hosts.get(host)
        if opts is None and host == DOCKER_HUB_ENDPOINT:
            opts = self.hosts.get("docker.io")
        return opts or HostOptions()

    def base_url(self, host: str) -> str:
        opts = self.options(host)
        plain = opts.http if opts.http is not None else is_loopback_host(host)
        return f"{'http' if plain else 'https'}://{host}"

    def client(self, host: str) -> httpx.AsyncClient:
        """The httpx client for ``host``'s TLS settings (made on first use in this loop)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # httpx clients belong to the loop they were used in; a new loop starts afresh.
            self._clients, self._loop = {}, loop
        opts = self.options(host)
        key = (opts.insecure, opts.ca_files)
        client = self._clients.get(key)
        if client is None:
            verify: bool | ssl.SSLContext = DeferredCAContext()
            if opts.insecure:
                verify = False
            elif opts.ca_files:
                context = ssl.create_default_context()
                for ca in opts.ca_files:
                    try:
                        context.load_verify_locations(cafile=ca)
                    except (OSError, ssl.SSLError) as exc:
                        raise SourceError(f"{host}: cannot load CA file {ca}: {exc}") from exc
                verify = context
            client = httpx.AsyncClient(
                verify=verify,
                transport=self._transport,
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 15.0)),
                follow_redirects=True,
                # Digests cover the stored bytes: ask for them unencoded.
                headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
            )
            self.clients_made += 1
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        if self._loop is not asyncio.get_running_loop():
            return  # made in another loop: cannot be closed from this one
        for client in clients:
            await client.aclose()


class AuthState:
    """The auth of one credentials source (a session): challenges, basic creds, tokens.

    ``credentials(host)`` is asked lazily, only when a host challenges; its answers are held
    only as long as this object (basic) or not at all (bearer: only the token is kept).
    """

    def __init__(self, credentials: CredentialsCallback | None = None) -> None:
        self.credentials = credentials
        self.challenges: dict[str, Challenge] = {}
        self.basic: dict[str, Credentials] = {}
        self.tokens: dict[tuple[str, tuple[str, ...]], BearerToken] = {}
        self.locks: dict[tuple[str, tuple[str, ...]], asyncio.Lock] = {}

    def __repr__(self) -> str:  # never show credentials or tokens
        return f"AuthState(hosts={sorted(self.challenges)!r})"

    async def lookup(self, host: str) -> Credentials | None:
        creds = await call_credentials(self.credentials, host)
        if creds is not None and not creds[0] and not creds[1]:
            return None  # an empty answer means anonymous
        return creds


def _tls_failure(exc: BaseException) -> str | None:
    """The reason when ``exc`` was caused by a failed certificate verification."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _fail_auth(ref: ImageReference, resp: httpx.Response, detail: str) -> SourceError:
    return SourceError(
        f"{ref}: authentication failed ({resp.status_code} {resp.reason_phrase}): {detail}"
    )


class Transport:
    """Sends registry requests with one :class:`Connections` and one :class:`AuthState`."""

    def __init__(
        self,
        credentials: CredentialsCallback | None = None,
        hosts: Mapping[str, HostOptions] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        user_agent: str = "bkcore",
        *,
        connections: Connections | None = None,
        auth: AuthState | None = None,
    ) -> None:
        self.owns_connections = connections is None
        self.conn = connections or Connections(hosts, retry, timeout, user_agent)
        self.auth = auth or AuthState(credentials)

    @property
    def retry(self) -> RetryPolicy:
        return self.conn.retry

    # -- hosts ----------------------------------------------------------------------------
    def options(self, host: str) -> HostOptions:
        return self.conn.options(host)

    def base_url(self, host: str) -> str:
        return self.conn.base_url(host)

    async def aclose(self) -> None:
        if self.owns_connections:
            await self.conn.aclose()

    # -- auth -----------------------------------------------------------------------------
    async def _authorization(
        self, ref: ImageReference, host: str, scopes: tuple[str, ...]
    ) -> str | None:
        state = self.auth
        challenge = state.challenges.get(host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = state.basic.get(host)
            return basic_header(creds) if creds else None
        key = (host, scopes)
        # One token request per scope even when many layers start at once.
        async with state.locks.setdefault(key, asyncio.Lock()):
            token = state.tokens.get(key)
            if token is None or not token.valid():
                token = await self._fetch_token(ref, host, challenge, scopes)
                state.tokens[key] = token
        return f"Bearer {token.token}"

    async def _fetch_token(
        self, ref: ImageReference, host: str, challenge: Challenge, scopes: tuple[str, ...]
    ) -> BearerToken:
        realm = challenge.params.get("realm")
        if not realm:
            raise SourceError(f"{ref}: bearer challenge from {host} has no realm")
        service = challenge.params.get("service")
        # The token server is reached with the registry's TLS settings (its CA, insecure)
        # unless the hosts config has an entry of its own for it.
        realm_host = urlsplit(realm).netloc
        tls = realm_host if realm_host in self.conn.hosts else host
        creds = await self.auth.lookup(host)
        resp: httpx.Response | None = None
        if creds is not None and not creds[0]:
            # An identity (refresh) token: the OAuth2 form POST of the token spec.
            form = [("grant_type", "refresh_token"), ("refresh_token", creds[1])]
            # OAuth2 takes one space-separated scope (docker distribution's oauth.md).
            form += [("client_id", CLIENT_ID), ("scope", " ".join(scopes))]
            if service:
                form.append(("service", service))
            body = urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            resp = await self._send_retrying(ref, "POST", realm, headers, body, tls_host=tls)
            if resp.status_code in (404, 405):
                await resp.aclose()
                resp = None  # no OAuth2 endpoint: fall back to GET
        if resp is None:
            params: list[tuple[str, str]] = [("service", service)] if service else []
            params.extend(("scope", s) for s in scopes)
            headers = {"Authorization": basic_header(creds)} if creds and creds[0] else {}
            resp = await self._send_retrying(
                ref, "GET", realm, headers, None, params=params, tls_host=tls
            )
        try:
            if resp.status_code in (401, 403):
                who = f"user {creds[0]!r}" if creds and creds[0] else "anonymous access"
                if creds and not creds[0]:
                    who = "the identity token"
                raise _fail_auth(ref, resp, f"token server {realm} rejected {who}")
            if resp.status_code != 200:
                raise SourceError(f"{ref}: token server {realm} answered {resp.status_code}")
            await resp.aread()
            try:
                doc = json.loads(resp.content)
                token = str(doc.get("token") or doc.get("access_token") or "")
                expires_in = float(doc.get("expires_in") or 60)
            except (ValueError, AttributeError) as exc:
                raise SourceError(f"{ref}: token server {realm} sent invalid JSON") from exc
            if not token:
                raise SourceError(f"{ref}: token server {realm} sent no token")
        finally:
            await resp.aclose()
        return BearerToken(token, time.monotonic() + max(1.0, expires_in - 5.0))

    async def _on_unauthorized(
        self, ref: ImageReference, host: str, resp: httpx.Response, sent_auth: str | None
    ) -> None:
        """Record the challenge of a 401 so the next attempt can authenticate; raise if not."""
        state = self.auth
        challenges = parse_challenges(resp.headers.get("WWW-Authenticate", ""))
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            raise SourceError(f"{ref}: {host} answered 401 Unauthorized without a usable challenge")
        previous = state.challenges.get(host)
        state.challenges[host] = chosen
        if chosen.scheme == "basic":
            creds = await state.lookup(host)
            if creds is None:
                raise SourceError(
                    f"{ref}: {host} requires authentication and no credentials are configured "
                    "(401 Unauthorized; docker login or a credential helper provides them)"
                )
            if sent_auth is not None and sent_auth == basic_header(creds):
                state.basic.pop(host, None)
                raise _fail_auth(ref, resp, f"{host} rejected the credentials of user {creds[0]!r}")
            state.basic[host] = creds
        elif sent_auth is not None and sent_auth.startswith("Bearer ") and previous == chosen:
            raise SourceError(f"{ref}: {host} denied access to {ref.repository} (401 Unauthorized)")
        else:
            for key in [k for k in state.tokens if k[0] == host]:
                del state.tokens[key]

    # -- requests -------------------------------------------------------------------------
    async def _send_retrying(
        self,
        ref: ImageReference,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
        params: Sequence[tuple[str, str]] = (),
        attempts: int | None = None,
        tls_host: str | None = None,
    ) -> httpx.Response:
        """Send with bounded retries; return the (unread, streaming) final response.

        The TLS settings are those of ``tls_host`` (default: the URL's host).
        """
        client = self.conn.client(tls_host or urlsplit(url).netloc)
        limit = attempts if attempts is not None else self.retry.attempts
        attempt = 0
        while True:
            content: bytes | AsyncIterator[bytes] | None = body() if callable(body) else body
            request = client.build_request(
                method, url, headers=dict(headers), content=content, params=list(params) or None
            )
            try:
                resp = await client.send(request, stream=True)
            except httpx.TransportError as exc:
                tls = _tls_failure(exc)
                if tls is not None:  # retrying cannot help
                    host = request.url.netloc.decode()
                    raise SourceError(
                        f"{ref}: TLS verification of {host} failed: {tls} (trust its CA with "
                        f'ca = ["file.pem"] under [registry."{host}"] in the registry config)'
                    ) from exc
                if attempt + 1 >= limit:
                    raise SourceError(
                        f"{ref}: {method} {request.url} failed after {attempt + 1} attempts: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
            else:
                if resp.status_code not in _RETRY_STATUS or attempt + 1 >= limit:
                    return resp
                await resp.aclose()
            await asyncio.sleep(self.retry.delay(attempt))
            attempt += 1

    async def _request_host(
        self,
        ref: ImageReference,
        host: str,
        method: str,
        url: str,
        scopes: tuple[str, ...],
        headers: Mapping[str, str] | None,
        body: Body,
        attempts: int | None = None,
    ) -> httpx.Response:
        for _ in range(3):
            auth = await self._authorization(ref, host, scopes)
            hdrs = dict(headers or {})
            if auth:
                hdrs["Authorization"] = auth
            resp = await self._send_retrying(ref, method, url, hdrs, body, attempts=attempts)
            if resp.status_code != 401:
                return resp
            await resp.aclose()
            await self._on_unauthorized(ref, host, resp, auth)
        raise SourceError(f"{ref}: {host} keeps answering 401 Unauthorized")

    def mirrors(self, ref: ImageReference) -> tuple[str, ...]:
        """The mirrors configured for ``ref``'s registry, in the order they are tried."""
        return self.options(ref.endpoint_host).mirrors

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
        """Send an authenticated request; the caller reads (or streams) and closes the reply.

        Pulls (GET/HEAD with ``actions="pull"``) of a registry with mirrors try each mirror
        once first, and use the first that answers below 400; on errors the origin is asked.
        """
        scopes = (scope_for(ref.repository, actions), *extra_scopes)
        origin = ref.endpoint_host
        if actions == "pull" and method in ("GET", "HEAD"):
            prefix = self.base_url(origin)
            if url.startswith(prefix + "/"):
                for mirror in self.mirrors(ref):
                    mirror_url = self.base_url(mirror) + url[len(prefix) :]
                    try:
                        resp = await self._request_host(
                            ref, mirror, method, mirror_url, scopes, headers, body, attempts=1
                        )
                    except SourceError:
                        continue  # unreachable or refusing us: the next one, then the origin
                    if resp.status_code < 400:
                        return resp
                    await resp.aclose()
        return await self._request_host(ref, origin, method, url, scopes, headers, body)
