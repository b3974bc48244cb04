"""How a source proves who it is: static credentials, or OAuth2 client-credentials tokens.

Each source's authenticator is an ``httpx.Auth`` the poller hands to ``client.send`` for the
requests to the source's own origin. The OAuth2 one caches its access token until shortly
before ``expires_in`` and fetches a new one once after a 401 (:meth:`SourceAuth.renew`).
No credential is ever put in a log line, an error message or a stored URL.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from bridge.config import (
    BasicAuth,
    BearerAuth,
    HeaderAuth,
    OAuth2Auth,
    QueryAuth,
    SourceConfig,
)
from bridge.core.pagination import without_params
from bridge.errors import PollError

EXPIRY_MARGIN_S = 60.0
"""A cached token is renewed this long before it expires (at most a tenth of its lifetime)."""


class SourceAuth(httpx.Auth):
    """Adds a source's credentials to a request, as an ``httpx.Auth``."""

    async def renew(self) -> bool:
        """After a 401: drop cached credentials; True when a retry may now succeed."""
        return False

    def scrub(self, url: str) -> str:
        """``url`` without credentials (an API may echo a query key into its next links)."""
        return url


@dataclass(frozen=True, eq=False)
class StaticAuth(SourceAuth):
    """Credentials that never change: a header (bearer, basic, custom) or a query parameter."""

    header: tuple[str, str] | None = None
    query: tuple[str, str] | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.header is not None:
            request.headers[self.header[0]] = self.header[1]
        if self.query is not None:
            request.url = request.url.copy_merge_params({self.query[0]: self.query[1]})
        yield request

    def scrub(self, url: str) -> str:
        return url if self.query is None else without_params(url, [self.query[0]])


def _basic(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass
class _Token:
    value: str
    valid_until: float | None
    """Monotonic seconds after which the token is renewed; None: until the API says 401."""


SOURCE_EXTENSION = "pollbridge.source"
"""The request extension naming the source a request is for (in a token request's errors)."""


class OAuth2ClientCredentials(SourceAuth):
    """The OAuth 2.0 client-credentials grant (RFC 6749 §4.4) with a cached token, shared by
    every source with the same client."""

    def __init__(
        self,
        config: OAuth2Auth,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.client = client
        self.clock = clock
        self.token_requests = 0
        self._token: _Token | None = None
        self._lock = asyncio.Lock()

    @property
    def held_token(self) -> str | None:
        """The access token currently cached, if any (redacted from errors)."""
        return None if self._token is None else self._token.value

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        source = str(request.extensions.get(SOURCE_EXTENSION, ""))
        timeout_s = request.extensions.get("timeout", {}).get("read") or 30.0
        request.headers["authorization"] = f"Bearer {await self.token(source, timeout_s)}"
        yield request

    async def renew(self) -> bool:
        self._token = None
        return True

    async def token(self, source: str, timeout_s: float) -> str:
        """The cached access token, fetched first when missing or about to expire."""
        async with self._lock:  # concurrent polls share one token request
            cached = self._token
            if cached is not None and (
                cached.valid_until is None or self.clock() < cached.valid_until
            ):
                return cached.value
            self._token = await self._fetch(source, timeout_s)
            return self._token.value

    async def _fetch(self, source: str, timeout_s: float) -> _Token:
        cfg = self.config
        form = {"grant_type": "client_credentials"}
        if cfg.scope:
            form["scope"] = cfg.scope
        if cfg.audience:
            form["audience"] = cfg.audience
        headers = {"accept": "application/json"}
        if cfg.client_auth == "basic":
            # RFC 6749 §2.3.1: both parts are form-encoded before Basic encoding
            headers["authorization"] = _basic(
                quote(cfg.client_id, safe=""), quote(cfg.client_secret, safe="")
            )
        else:
            form["client_id"] = cfg.client_id
            form["client_secret"] = cfg.client_secret
        where = f"OAuth2 token request to {cfg.token_url}"
        started = self.clock()
        self.token_requests += 1
        try:
            response = await self.client.post(
                cfg.token_url, data=form, headers=headers, timeout=timeout_s
            )
        except httpx.HTTPError as exc:
            raise PollError(source, f"{where} failed: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise PollError(
                source,
                f"{where} failed: HTTP {response.status_code} {response.reason_phrase}"
                + _oauth_error(response.content),
            )
        try:
            body: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise PollError(source, f"{where}: the answer is not JSON") from exc
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise PollError(source, f"{where}: the answer has no access_token")
        return _Token(token, _valid_until(started, body.get("expires_in")))


def _valid_until(obtained: float, expires_in: Any) -> float | None:
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
        return None
    return obtained + expires_in - min(EXPIRY_MARGIN_S, expires_in / 10)


def _oauth_error(content: bytes) -> str:
    """The RFC 6749 §5.2 ``error`` and ``error_description``, when the answer has them."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return ""
    description = body.get("error_description")
    text = f": {body['error']}"
    if isinstance(description, str) and description:
        text += f" ({description[:200]})"
    return text


class Authenticators:
    """One authenticator per source; sources with the same OAuth2 client share its token."""

    def __init__(self, client: httpx.AsyncClient, *, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.clock = clock
        self._oauth2: dict[OAuth2Auth, OAuth2ClientCredentials] = {}

    def held_tokens(self) -> list[str]:
        """The OAuth2 access tokens fetched at run time: secrets no configuration lists."""
        return [t for c in self._oauth2.values() if (t := c.held_token)]

    def for_source(self, source: SourceConfig) -> SourceAuth | None:
        """The authenticator of ``source``'s ``auth`` table, or None when it has none."""
        auth = source.auth
        if auth is None:
            return None
        if isinstance(auth, BearerAuth):
            return StaticAuth(header=("authorization", f"Bearer {auth.token}"))
        if isinstance(auth, BasicAuth):
            return StaticAuth(header=("authorization", _basic(auth.username, auth.password)))
        if isinstance(auth, HeaderAuth):
            return StaticAuth(header=(auth.name, auth.value))
        if isinstance(auth, QueryAuth):
            return StaticAuth(query=(auth.name, auth.value))
        assert isinstance(auth, OAuth2Auth)  # noqa: S101 - the config's union is exhaustive
        found = self._oauth2.get(auth)
        if found is None:
            found = self._oauth2[auth] = OAuth2ClientCredentials(
                auth, self.client, clock=self.clock
            )
        return found
