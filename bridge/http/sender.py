"""The HTTP shell that POSTs one signed webhook and reports what happened."""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import aiohttp
import httpx
from yarl import URL

from bridge import __version__
from bridge.config import ListenerConfig, SigningKeys
from bridge.core.render import BodyFormat, RenderFailed, render_body
from bridge.core.retry import parse_retry_after
from bridge.core.signing import signature_header
from bridge.http.connections import (
    AIOHTTP_ERRORS,
    StackClient,
    describe_aiohttp_error,
    describe_http_error,
)
from bridge.http.templates import render_in_thread
from bridge.models import AttemptResult, Event

RESPONSE_EXCERPT_BYTES = 4096
USER_AGENT = f"pollbridge/{__version__}"


def listener_headers(listener: ListenerConfig) -> dict[str, str]:
    """The headers every request of ``listener`` carries: its own, then content type and agent.

    The content type comes from the listener's format (or its ``content_type``).
    """
    headers = {k.lower(): v for k, v in listener.headers.items()}
    headers["content-type"] = listener.body_format.content_type
    headers["user-agent"] = USER_AGENT
    return headers


def webhook_headers(
    listener: ListenerConfig, event: Event, body: bytes, timestamp_s: int
) -> dict[str, str]:
    """The request headers: listener's own first, then the Standard Webhooks ones (which win).

    The signature holds one ``v1`` per secret and one ``v1a`` per ed25519 key.
    """
    headers = listener_headers(listener)
    _sign(headers, listener.keys, event.id, body, timestamp_s)
    return headers


def _sign(
    headers: dict[str, str], keys: SigningKeys, event_id: str, body: bytes, timestamp_s: int
) -> None:
    headers["webhook-id"] = event_id
    headers["webhook-timestamp"] = str(timestamp_s)
    if keys:
        headers["webhook-signature"] = signature_header(
            keys.secrets, event_id, timestamp_s, body, keys.ed25519
        )


RENDER_TIMEOUT_S = 2.0
"""A template render still running after this long fails its delivery (no retry)."""


@dataclass(frozen=True)
class _Route:
    """What a send to one listener over one client needs, worked out once."""

    listener: ListenerConfig
    client: httpx.AsyncClient
    url: URL
    """The URL as httpx would send it, without credentials."""
    headers: dict[str, str]
    """The listener's headers, content type, agent and the Basic credentials of a URL with
    user:password (which win over a listener's own Authorization)."""
    proxy: str | None
    """The proxy from the environment for this URL (aiohttp clients only)."""
    timeout_s: float
    timeout: aiohttp.ClientTimeout
    """The listener's timeout over the whole send, response excerpt included, as aiohttp
    enforces it (one timer per request; no asyncio.timeout around it)."""
    body_format: BodyFormat
    keys: SigningKeys


class _Answer(NamedTuple):  # (a tuple: one per webhook, built in no time)
    status: int
    reason: str
    location: str | None
    retry_after: str | None
    excerpt: bytes


class Sender:
    """Delivers events over the pool's aiohttp sessions (redirects never followed).

    ``clients`` maps a listener name to its own client when its TLS settings differ. A client
    from a :class:`~bridge.http.connections.ClientPool` is sent through its aiohttp session
    directly (the httpx request and response model cost more than aiohttp itself); any other
    ``httpx.AsyncClient`` (tests with respx or a mock transport) through ``client.send``.
    """

    def __init__(
        self, client: httpx.AsyncClient, clients: Mapping[str, httpx.AsyncClient] | None = None
    ):
        self.client = client
        self.clients = dict(clients or {})
        self._routes: dict[int, _Route] = {}

    def _route(self, listener: ListenerConfig) -> _Route:
        # once per listener object and client (a reload brings new listener objects)
        client = self.clients.get(listener.name, self.client)
        route = self._routes.get(id(listener))
        if route is None or route.listener is not listener or route.client is not client:
            url = httpx.URL(listener.url)
            headers = listener_headers(listener)
            if url.userinfo:
                userinfo = f"{url.username}:{url.password}".encode()
                headers["authorization"] = "Basic " + base64.b64encode(userinfo).decode("ascii")
                url = url.copy_with(username=None, password=None)
            target = URL(str(url), encoded=True)
            proxy = client.proxies.for_url(target) if isinstance(client, StackClient) else None
            if len(self._routes) > 4 * len(self.clients) + 100:
                self._routes.clear()  # listeners of configurations reloaded away
            route = _Route(
                listener,
                client,
                target,
                headers,
                proxy,
                listener.timeout.total_seconds(),
                aiohttp.ClientTimeout(
                    total=listener.timeout.total_seconds(), ceil_threshold=math.inf
                ),
                listener.body_format,
                listener.keys,
            )
            self._routes[id(listener)] = route
        return route

    async def send(self, listener: ListenerConfig, event: Event, now: datetime) -> AttemptResult:
        """One attempt: success is a 2xx within the listener's timeout; nothing raises.

        A body that cannot be built (a template failing on this event, or running past
        :data:`RENDER_TIMEOUT_S`) is a failure that no retry can fix: ``retryable`` and
        ``sent`` are False.
        """
        route = self._route(listener)
        fmt = route.body_format
        try:
            if fmt.kind != "template":
                body = render_body(fmt, event)  # our own code: fast and bounded
            else:
                body = await render_in_thread(fmt, event, RENDER_TIMEOUT_S)
        except RenderFailed as exc:
            return AttemptResult(
                False,
                None,
                0.0,
                error=f"cannot build the request body: {exc}",
                retryable=False,
                sent=False,
            )
        headers = dict(route.headers)
        _sign(headers, route.keys, event.id, body, int(now.timestamp()))
        client = route.client
        timeout_s = route.timeout_s
        started = time.monotonic()
        try:
            if isinstance(client, StackClient):
                answer = await _post_aiohttp(client.session, route, headers, body)
            else:
                async with asyncio.timeout(timeout_s):
                    answer = await _post_httpx(client, route.url, headers, body, timeout_s)
        except TimeoutError:
            return AttemptResult(
                False, None, time.monotonic() - started, error=f"timed out after {timeout_s:g}s"
            )
        except AIOHTTP_ERRORS as exc:
            return AttemptResult(
                False, None, time.monotonic() - started, error=describe_aiohttp_error(exc)
            )
        except httpx.HTTPError as exc:
            return AttemptResult(
                False, None, time.monotonic() - started, error=describe_http_error(exc)
            )
        return _result(answer, time.monotonic() - started, now)


async def _post_aiohttp(
    session: aiohttp.ClientSession, route: _Route, headers: dict[str, str], body: bytes
) -> _Answer:
    response = await session.post(
        route.url,
        data=body,
        headers=headers,
        allow_redirects=False,
        timeout=route.timeout,
        proxy=route.proxy,
    )
    try:
        if response.headers.get("content-length") == "0":
            excerpt = b""  # the usual 2xx: nothing to read
        else:
            excerpt = await response.content.read(RESPONSE_EXCERPT_BYTES)
            while excerpt and len(excerpt) < RESPONSE_EXCERPT_BYTES:
                more = await response.content.read(RESPONSE_EXCERPT_BYTES - len(excerpt))
                if not more:
                    break
                excerpt += more
    finally:
        response.release()  # an unread rest closes the connection instead of pooling it
    return _Answer(
        response.status,
        response.reason or "",
        response.headers.get("location"),
        response.headers.get("retry-after"),
        excerpt,
    )


async def _post_httpx(
    client: httpx.AsyncClient, url: URL, headers: dict[str, str], body: bytes, timeout_s: float
) -> _Answer:
    request = client.build_request(
        "POST", str(url), headers=headers, content=body, timeout=timeout_s
    )
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        excerpt = await _read_excerpt(response)
    finally:
        await response.aclose()
    return _Answer(
        response.status_code,
        response.reason_phrase,
        response.headers.get("location"),
        response.headers.get("retry-after"),
        excerpt,
    )


def _result(answer: _Answer, duration: float, now: datetime) -> AttemptResult:
    status = answer.status
    text = answer.excerpt.decode("utf-8", "replace") if answer.excerpt else None
    if 200 <= status < 300:
        return AttemptResult(True, status, duration, response_excerpt=text)
    if 300 <= status < 400:
        return AttemptResult(
            False,
            status,
            duration,
            error=f"HTTP {status}: redirects are not followed (Location: {answer.location or '?'})",
            response_excerpt=text,
        )
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(answer.retry_after, now)
    return AttemptResult(
        False,
        status,
        duration,
        error=f"HTTP {status} {answer.reason}".rstrip(),
        response_excerpt=text,
        retry_after_s=retry_after,
        gone=status == 410,
    )


async def _read_excerpt(response: httpx.Response) -> bytes:
    # Read at most the excerpt and drop the rest: a never-ending or huge body costs nothing.
    if response.is_stream_consumed:  # built in memory (a mock transport): already read
        return response.content[:RESPONSE_EXCERPT_BYTES]
    buf = bytearray()
    async for chunk in response.aiter_raw():
        buf.extend(chunk)
        if len(buf) >= RESPONSE_EXCERPT_BYTES:
            break
    return bytes(buf[:RESPONSE_EXCERPT_BYTES])
