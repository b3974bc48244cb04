"""The HTTP shell that fetches a source: one request, bounded in size and time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from bridge import __version__
from bridge.core.pagination import same_origin
from bridge.core.retry import parse_retry_after
from bridge.errors import PollError
from bridge.http.auth import SOURCE_EXTENSION, SourceAuth
from bridge.http.connections import describe_http_error
from bridge.http.decoding import BoundedDecoder
from bridge.http.spool import BodySpool, SpoolPolicy

MAX_REDIRECTS = 5
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Never sent to another origin after a redirect, whoever set them (a source's ``headers``,
the client's cookie jar), unless a source names them in ``redirect_headers``."""
USER_AGENT = f"pollbridge/{__version__}"


@dataclass(frozen=True)
class Fetched:
    """One HTTP response, fully read."""

    url: str
    status: int
    headers: httpx.Headers
    body: bytes
    spool: Path | None = None
    """Where the body is when it was spooled to a file (then ``body`` is empty); the caller
    removes the file (:func:`bridge.http.spool.remove_spool`)."""

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def content_type(self) -> str | None:
        value: str | None = self.headers.get("content-type")
        return value


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace").strip()
    return text + ("…" if len(body) > limit else "")


class HostLimiter:
    """Politeness per host, shared by every source on it: at most ``concurrency`` requests at
    once, and (for hosts given a ``min_interval``) a least gap between the starts of two."""

    def __init__(
        self,
        concurrency: int = 2,
        min_interval_s: Mapping[str, float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.concurrency = concurrency
        self.min_interval_s = {k.lower(): v for k, v in (min_interval_s or {}).items()}
        self.clock = clock
        self.sleep = sleep
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._next_start: dict[str, float] = {}

    @asynccontextmanager
    async def slot(self, url: str) -> AsyncIterator[None]:
        """Hold one of the host's request slots, starting no sooner than its gap allows."""
        host = (urlsplit(url).hostname or "").lower()
        semaphore = self._slots.get(host)
        if semaphore is None:
            semaphore = self._slots[host] = asyncio.Semaphore(self.concurrency)
        async with semaphore:
            gap = self.min_interval_s.get(host, 0.0)
            if gap > 0:
                now = self.clock()
                start = max(now, self._next_start.get(host, now))
                self._next_start[host] = start + gap  # reserved before waiting: no await between
                if start > now:
                    await self.sleep(start - now)
            yield


class Poller:
    """Fetches URLs for sources with a shared ``httpx.AsyncClient``.

    ``clients`` maps a source name to its own client when its TLS settings differ.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        hosts: HostLimiter | None = None,
        *,
        clients: Mapping[str, httpx.AsyncClient] | None = None,
    ):
        self.client = client
        self.hosts = hosts or HostLimiter()
        self.clients = dict(clients or {})

    async def fetch(
        self,
        source: str,
        url: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        timeout_s: float,
        max_bytes: int,
        now: datetime,
        accept_not_modified: bool = False,
        auth: SourceAuth | None = None,
        redirect_headers: Collection[str] = (),
        spool: SpoolPolicy | None = None,
    ) -> Fetched:
        """Fetch ``url``; raise PollError for a non-2xx status, a timeout or an oversized body.

        Redirects are followed up to 5 times, never from https to http, and credentials are
        sent only to ``url``'s origin: a hop to another origin carries none of ``headers``
        but those named in ``redirect_headers``, and never ``Authorization``,
        ``Proxy-Authorization`` or ``Cookie`` unless named there. The whole exchange, including a slow body, must finish
        within ``timeout_s`` (waiting for the host's turn is not counted). ``auth`` (an
        ``httpx.Auth``) adds the source's credentials on its own origin; after a 401 one that
        can renew them gets one more try. That retry is ours, not an auth flow's: httpx reads a
        401's whole body before an auth flow's retry, past ``max_bytes``. The body is decoded in
        bounded steps, so ``max_bytes`` holds for the decoded size whatever the codings.
        A successful body of ``spool.threshold`` bytes or more is written to a temporary file as
        it is read (:attr:`Fetched.spool`).
        """
        async with self.hosts.slot(url):
            retried = False
            while True:
                try:
                    async with asyncio.timeout(timeout_s):
                        return await self._fetch(
                            source,
                            url,
                            method,
                            params,
                            headers,
                            json_body,
                            timeout_s,
                            max_bytes,
                            now,
                            accept_not_modified,
                            auth,
                            redirect_headers,
                            spool,
                        )
                except TimeoutError as exc:
                    raise PollError(source, f"timed out after {timeout_s:g}s", url=url) from exc
                except httpx.HTTPError as exc:
                    raise PollError(source, describe_http_error(exc), url=url) from exc
                except PollError as exc:
                    if exc.status != 401 or auth is None or retried or not await auth.renew():
                        raise
                    retried = True

    async def _fetch(
        self,
        source: str,
        url: str,
        method: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        json_body: Any,
        timeout_s: float,
        max_bytes: int,
        now: datetime,
        accept_not_modified: bool,
        auth: SourceAuth | None,
        redirect_headers: Collection[str],
        spool: SpoolPolicy | None = None,
    ) -> Fetched:
        base_headers = {"user-agent": USER_AGENT, "accept": "application/json, */*;q=0.5"}
        # header names are case-insensitive: a source's User-Agent replaces ours, not joins it
        given = {k.lower(): v for k, v in (headers or {}).items()}
        own_headers = {**base_headers, **given}
        kept = {name.lower() for name in redirect_headers}
        foreign_headers = {**base_headers, **{k: v for k, v in given.items() if k in kept}}
        client = self.clients.get(source, self.client)
        current_url = url
        current_method = method
        current_params: Mapping[str, Any] | None = params
        for _hop in range(MAX_REDIRECTS + 1):
            home = same_origin(current_url, url)
            request = client.build_request(
                current_method,
                current_url,
                params=_stringify(current_params),
                headers=own_headers if home else foreign_headers,
                json=json_body if current_method == "POST" else None,
                timeout=timeout_s,
                extensions={SOURCE_EXTENSION: source},
            )
            shown_url = str(request.url)  # before credentials: never a secret in a message
            if not home:
                for name in _CREDENTIAL_HEADERS - kept:
                    request.headers.pop(name, None)
            response = await client.send(
                request, stream=True, auth=auth if auth is not None and home else None
            )
            try:
                if response.is_redirect and "location" in response.headers:
                    target = urljoin(shown_url, response.headers["location"])
                    if urlsplit(shown_url).scheme == "https" and urlsplit(target).scheme != "https":
                        raise PollError(
                            source,
                            f"refused a redirect from https to {target} (a downgrade)",
                            url=url,
                            status=response.status_code,
                        )
                    current_url = target
                    current_params = None  # the Location carries its own query
                    if response.status_code in (301, 302, 303) and current_method == "POST":
                        current_method = "GET"
                    continue
                ok = 200 <= response.status_code < 300
                body, spooled = await _read_capped(
                    response, max_bytes, source, shown_url, spool if ok else None
                )
            finally:
                await response.aclose()
            if response.status_code == 304 and accept_not_modified:
                return Fetched(shown_url, 304, response.headers, b"")
            if not ok:
                retry_after = None
                if response.status_code in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("retry-after"), now)
                raise PollError(
                    source,
                    f"HTTP {response.status_code} {response.reason_phrase}"
                    + (f": {_excerpt(body)}" if body else ""),
                    url=shown_url,
                    status=response.status_code,
                    retry_after_s=retry_after,
                )
            return Fetched(shown_url, response.status_code, response.headers, body, spooled)
        raise PollError(source, f"more than {MAX_REDIRECTS} redirects", url=url)


async def _read_capped(
    response: httpx.Response, max_bytes: int, source: str, url: str, policy: SpoolPolicy | None
) -> tuple[bytes, Path | None]:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PollError(
            source,
            f"response of {int(declared)} bytes exceeds max_bytes = {max_bytes}",
            url=url,
            status=response.status_code,
        )
    too_large = PollError(
        source,
        f"response exceeds max_bytes = {max_bytes} (stopped reading)",
        url=url,
        status=response.status_code,
    )
    if response.is_stream_consumed:  # built in memory (a mock transport): already decoded
        if len(response.content) > max_bytes:
            raise too_large
        return response.content, None
    decoder = BoundedDecoder(response.headers.get_list("content-encoding", split_commas=True))
    # without a spool size the body stays in memory, whatever its size
    spool = (
        BodySpool(max_bytes + 1) if policy is None else BodySpool(policy.threshold, policy.on_spool)
    )
    try:
        async for raw in response.aiter_raw():
            for piece in decoder.decode(raw):
                if spool.size + len(piece) > max_bytes:
                    raise too_large
                spool.write(piece)
        return spool.finish()
    except BaseException:
        spool.discard()
        raise


def _stringify(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    out = {}
    for k, v in params.items():
        if isinstance(v, bool):
            out[k] = "true" if v else "false"
        else:
            out[k] = str(v)
    return out
