"""The HTTP shell that POSTs one signed webhook and reports what happened."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import httpx

from bridge import __version__
from bridge.config import ListenerConfig
from bridge.core.render import RenderFailed, render_body
from bridge.core.retry import parse_retry_after
from bridge.core.signing import signature_header
from bridge.http.connections import describe_http_error
from bridge.models import AttemptResult, Event

RESPONSE_EXCERPT_BYTES = 4096
USER_AGENT = f"pollbridge/{__version__}"


def webhook_headers(
    listener: ListenerConfig, event: Event, body: bytes, timestamp_s: int
) -> dict[str, str]:
    """The request headers: listener's own first, then the Standard Webhooks ones (which win).

    The content type comes from the listener's format (or its ``content_type``); the signature
    holds one ``v1`` per secret and one ``v1a`` per ed25519 key.
    """
    headers = {k.lower(): v for k, v in listener.headers.items()}
    headers.update(
        {
            "content-type": listener.body_format.content_type,
            "user-agent": USER_AGENT,
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp_s),
        }
    )
    keys = listener.keys
    if keys:
        headers["webhook-signature"] = signature_header(
            keys.secrets, event.id, timestamp_s, body, keys.ed25519
        )
    return headers


@dataclass(frozen=True)
class _Route:
    url: httpx.URL
    host: str
    """The Host header: the URL's host, and its port unless the scheme's default."""
    default_headers: dict[str, str]
    transport: httpx.AsyncBaseTransport | None
    """None when the URL carries credentials: such a send goes through client.send."""


class Sender:
    """Delivers events over a shared ``httpx.AsyncClient`` (redirects never followed).

    ``clients`` maps a listener name to its own client when its TLS settings differ.
    """

    def __init__(
        self, client: httpx.AsyncClient, clients: Mapping[str, httpx.AsyncClient] | None = None
    ):
        self.client = client
        self.clients = dict(clients or {})
        self._routes: dict[tuple[httpx.AsyncClient, str], _Route] = {}

    def _route(self, client: httpx.AsyncClient, url_text: str) -> _Route:
        # Per client and listener URL, once: the parsed URL, the client's default headers and
        # the transport the client picks for the URL (its own, or a proxy's from the
        # environment). A send hands its request straight to that transport: client.send's
        # auth, redirect, cookie and hook machinery, none of which a webhook uses (redirects
        # are never followed, a receiver's cookies never sent back), cost ~40% of a send's CPU,
        # and build_request's URL parsing and header merging another quarter.
        route = self._routes.get((client, url_text))
        if route is None:
            url = httpx.URL(url_text)
            # credentials in the URL become a header only in the client's auth flow
            transport = None if url.userinfo else client._transport_for_url(url)
            route = _Route(url, url.netloc.decode("ascii"), dict(client.headers), transport)
            self._routes[(client, url_text)] = route
        return route

    async def send(self, listener: ListenerConfig, event: Event, now: datetime) -> AttemptResult:
        """One attempt: success is a 2xx within the listener's timeout; nothing raises.

        A body that cannot be built (a template failing on this event) is a failure that no
        retry can fix: ``retryable`` and ``sent`` are False.
        """
        try:
            body = render_body(listener.body_format, event)
        except RenderFailed as exc:
            return AttemptResult(
                False,
                None,
                0.0,
                error=f"cannot build the request body: {exc}",
                retryable=False,
                sent=False,
            )
        timestamp_s = int(now.timestamp())
        headers = webhook_headers(listener, event, body, timestamp_s)
        timeout_s = listener.timeout.total_seconds()
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                return await self._post(listener, body, headers, timeout_s, started, now)
        except TimeoutError:
            return AttemptResult(
                False, None, time.monotonic() - started, error=f"timed out after {timeout_s:g}s"
            )
        except httpx.HTTPError as exc:
            return AttemptResult(
                False, None, time.monotonic() - started, error=describe_http_error(exc)
            )

    async def _post(
        self,
        listener: ListenerConfig,
        body: bytes,
        headers: dict[str, str],
        timeout_s: float,
        started: float,
        now: datetime,
    ) -> AttemptResult:
        client = self.clients.get(listener.name, self.client)
        route = self._route(client, listener.url)
        request = httpx.Request(
            "POST",
            route.url,
            headers=_request_headers(route, headers, body),
            stream=httpx.ByteStream(body),
            extensions={"timeout": _timeout_extension(timeout_s)},
        )
        request.read()  # as content= would: the body is in memory, the transports read it
        if route.transport is None:
            response = await client.send(request, stream=True, follow_redirects=False)
        else:
            response = await route.transport.handle_async_request(request)
        try:
            excerpt = await _read_excerpt(response)
        finally:
            await response.aclose()
        duration = time.monotonic() - started
        status = response.status_code
        text = excerpt.decode("utf-8", "replace") if excerpt else None
        if 200 <= status < 300:
            return AttemptResult(True, status, duration, response_excerpt=text)
        if 300 <= status < 400:
            location = response.headers.get("location", "?")
            return AttemptResult(
                False,
                status,
                duration,
                error=f"HTTP {status}: redirects are not followed (Location: {location})",
                response_excerpt=text,
            )
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"), now)
        return AttemptResult(
            False,
            status,
            duration,
            error=f"HTTP {status} {response.reason_phrase}".rstrip(),
            response_excerpt=text,
            retry_after_s=retry_after,
            gone=status == 410,
        )


def _request_headers(route: _Route, headers: dict[str, str], body: bytes) -> dict[str, str]:
    # The headers httpx.Request(content=body) would send (Host and Content-Length unless
    # given), merged here in one dict: its own merge builds three Headers objects per send.
    merged = {**route.default_headers, **headers}  # every key is lower case
    out = {} if "host" in merged else {"Host": route.host}
    out.update(merged)
    if body:
        if "content-length" not in merged:
            out["Content-Length"] = str(len(body))
    elif "content-length" not in merged and "transfer-encoding" not in merged:
        out["Content-Length"] = "0"
    return out


@functools.cache
def _timeout_extension(timeout_s: float) -> dict[str, float | None]:
    # one per distinct listener timeout; the transports only read it
    return httpx.Timeout(timeout_s).as_dict()


async def _read_excerpt(response: httpx.Response) -> bytes:
    # Read at most the excerpt and drop the rest: a never-ending or huge body costs nothing.
    if response.is_stream_consumed:  # built in memory (a mock transport): already read
        return response.content[:RESPONSE_EXCERPT_BYTES]
    if response.headers.get("content-length") == "0":
        return b""  # the usual 2xx: nothing to read, and iterating the stream costs ~10% of a send
    buf = bytearray()
    async for chunk in response.aiter_raw():
        buf.extend(chunk)
        if len(buf) >= RESPONSE_EXCERPT_BYTES:
            break
    return bytes(buf[:RESPONSE_EXCERPT_BYTES])
