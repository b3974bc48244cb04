"""The page walk: every page of a source's list, fetched conditionally when it can be.

The pipeline calls :func:`walk_pages` once per poll and gets the pages' items back. The walk
asks the poller for each page, has each page decoded (by the function the pipeline hands it,
which runs off the event loop) to find the next page's URL (``bridge.core.pagination``), and
keeps each page's validators (ETag, Last-Modified and the next link) for the next poll.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from bridge.config import SourceConfig
from bridge.core.pagination import (
    Page,
    PaginationFailed,
    first_page_url,
    next_page_body,
    next_page_url,
    same_origin,
    with_params,
)
from bridge.errors import ExtractError, PollError
from bridge.http.auth import SourceAuth
from bridge.http.poller import Fetched, Poller
from bridge.http.spool import SpoolPolicy
from bridge.models import Item

DecodePage = Callable[[Fetched], Awaitable[tuple[Any, list[Item]]]]
"""Turns a fetched page into its decoded document (for the next link) and its items."""
StopAfter = Callable[[list[Item]], bool]
"""Whether the walk ends after a page with these items (an append source's ``stop_at_seen``)."""


@dataclass(frozen=True)
class Pages:
    """What one walk found."""

    items: list[list[Item]] | None
    """Each page's items; None when every page answered 304 Not Modified."""
    validators: dict[str, dict[str, str]]
    """Per page URL (redacted): its ETag, Last-Modified and the next page's URL."""
    requests: int
    stopped: bool = False
    """The walk ended early: a page had an entry already seen (``stop_at_seen``)."""


@dataclass(frozen=True)
class Request:
    """The query parameters and JSON body a walk sends, when not the source's own (an
    incremental source's window sets its cursor in them)."""

    params: Mapping[str, Any]
    body: Any


def conditional(source: SourceConfig) -> bool:
    """Whether ``source``'s pages are asked for conditionally."""
    # If-None-Match on a POST is a write precondition, not a cache validator
    return source.conditional and source.request_method == "GET"


async def walk_pages(
    poller: Poller,
    source: SourceConfig,
    now: datetime,
    *,
    decode: DecodePage,
    redact: Callable[[str], str],
    auth: SourceAuth | None = None,
    validators: Mapping[str, Mapping[str, str]] | None = None,
    stop: StopAfter | None = None,
    request: Request | None = None,
    spool: SpoolPolicy | None = None,
) -> Pages:
    """Fetch every page of ``source``; any failing page fails the whole list.

    ``stop``: no page is fetched after one for which it says True.

    With ``validators`` (from the previous walk) the pages are asked for conditionally; when
    all answer 304 the result has no items. Once a page has changed, every page is fetched in
    full, so the list is always complete. Page keys and next links are stored ``redact``-ed: a
    URL may carry a password or a key in its query, and the state file must not.
    A page of ``spool.threshold`` bytes or more is spooled to a file (``Fetched.spool``) before
    ``decode`` gets it.
    """
    spec = source.page_spec
    max_pages = spec.max_pages if spec is not None else 1
    request = request or Request(source.params, source.request_body)
    first_url = first_page_url(spec, with_params(source.url, request.params))
    ask = validators is not None and _usable(validators)
    known_all = validators or {}
    while True:
        walk = _Walk(
            poller, source, now, decode, redact, auth, first_url, max_pages, stop, request, spool
        )
        done = await walk.run(known_all if ask else None)
        if done is not None:
            return done
        ask = False  # a page changed after a 304, or a stored link lost its secret: walk afresh


class _Walk:
    """One pass over the list; ``run`` returns None when the list must be walked afresh."""

    def __init__(
        self,
        poller: Poller,
        source: SourceConfig,
        now: datetime,
        decode: DecodePage,
        redact: Callable[[str], str],
        auth: SourceAuth | None,
        first_url: str,
        max_pages: int,
        stop: StopAfter | None,
        request: Request,
        spool: SpoolPolicy | None,
    ) -> None:
        self.poller = poller
        self.source = source
        self.now = now
        self.decode = decode
        self.redact = redact
        self.auth = auth
        self.first_url = first_url
        self.max_pages = max_pages
        self.stop = stop
        self.body: Any = request.body
        self.spool = spool

    async def run(self, known_all: Mapping[str, Mapping[str, str]] | None) -> Pages | None:
        source = self.source
        pages: list[list[Item]] = []
        seen: dict[str, dict[str, str]] = {}
        url: str | None = self.first_url
        body: Any = self.body
        stopped = False
        while url is not None:
            if len(seen) >= self.max_pages:
                raise PollError(
                    source.name,
                    f"the list has more than max_pages = {self.max_pages} pages; raise "
                    "paginate.max_pages or narrow the list (a partial list would delete items)",
                    url=url,
                )
            page_key = self.redact(url) + self._body_cursor(body)
            if page_key in seen:
                raise PollError(
                    source.name, f"pagination loops: page {len(seen) + 1} repeats {url}"
                )
            known = known_all.get(page_key) if known_all is not None else None
            fetched = await self._fetch(url, known, body)
            if fetched.not_modified:
                assert known is not None  # noqa: S101 - a 304 is accepted only then
                seen[page_key] = {**known, **_validators_of(fetched.headers, known.get("next"))}
                # an unchanged page was read in full before: every entry on it was seen
                url = known.get("next") if self.stop is None else None
                if url is not None and "***" in url:
                    return None  # the stored link lost its secret: walk it afresh
                continue
            if known_all is not None and seen:
                # an earlier page was 304 and this one changed: the earlier pages' items
                # are needed too, so walk the list again without validators
                return None
            known_all = None
            doc, items = await self.decode(fetched)
            if self._body_paging():
                body = self._next_body(url, doc, fetched, body)
                next_url = None if body is None else url
                stored_next = None  # never conditional (a POST): nothing to store
            else:
                next_url = self._next_url(url, doc, fetched)
                stored_next = None if next_url is None else self.redact(next_url)
            if next_url is not None and self.stop is not None and self.stop(items):
                # stored without its next link: a 304 of this page ends the walk there too
                next_url, stored_next, stopped = None, None, True
            seen[page_key] = _validators_of(fetched.headers, stored_next)
            pages.append(items)
            url = next_url
        return Pages(pages if pages else None, seen, len(seen), stopped)

    def _body_paging(self) -> bool:
        spec = self.source.page_spec
        return spec is not None and spec.body_param is not None

    def _body_cursor(self, body: Any) -> str:
        """What tells pages apart when the cursor travels in the body (loop detection)."""
        spec = self.source.page_spec
        if spec is None or spec.body_param is None:
            return ""
        node = body
        for name in spec.body_param:
            node = node.get(name) if isinstance(node, dict) else None
        return f" [{'.'.join(spec.body_param)}={node!r}]"

    def _next_body(self, url: str, doc: Any, fetched: Fetched, body: Any) -> Any:
        source = self.source
        assert source.page_spec is not None  # noqa: S101 - body paging needs a spec
        page = Page(url, doc, fetched.headers.get_list("link"), source.spec.items, fetched.url)
        try:
            return next_page_body(source.page_spec, page, body)
        except PaginationFailed as exc:
            raise ExtractError(source.name, str(exc), url=fetched.url) from exc

    async def _fetch(self, url: str, known: Mapping[str, str] | None, body: Any) -> Fetched:
        source = self.source
        headers = dict(source.headers)
        if known is not None:
            headers.update(_conditional_headers(known))
        return await self.poller.fetch(
            source.name,
            url,
            method=source.request_method,
            headers=headers,
            json_body=body,
            timeout_s=source.timeout.total_seconds(),
            max_bytes=source.max_bytes,
            now=self.now,
            accept_not_modified=known is not None,
            auth=self.auth,
            redirect_headers=source.redirect_headers,
            spool=self.spool,
        )

    def _next_url(self, url: str, doc: Any, fetched: Fetched) -> str | None:
        source = self.source
        page = Page(url, doc, fetched.headers.get_list("link"), source.spec.items, fetched.url)
        try:
            next_url = next_page_url(source.page_spec, page)
        except PaginationFailed as exc:
            raise ExtractError(source.name, str(exc), url=fetched.url) from exc
        if next_url is not None and self.auth is not None:
            next_url = self.auth.scrub(next_url)  # never a secret in stored state or logs
        if next_url is not None and not same_origin(next_url, self.first_url):
            raise PollError(
                source.name,
                f"refused to follow the next page to another origin: {next_url}",
                url=fetched.url,
            )
        return next_url


def _usable(validators: Mapping[str, Mapping[str, str]]) -> bool:
    """A conditional walk needs a validator for every page it may meet."""
    return bool(validators) and all(
        "etag" in v or "last_modified" in v for v in validators.values()
    )


def _conditional_headers(known: Mapping[str, str]) -> dict[str, str]:
    headers = {}
    if "etag" in known:
        headers["if-none-match"] = known["etag"]
    if "last_modified" in known:
        headers["if-modified-since"] = known["last_modified"]
    return headers


def _validators_of(headers: httpx.Headers, next_url: str | None) -> dict[str, str]:
    found = {}
    if headers.get("etag"):
        found["etag"] = headers["etag"]
    if headers.get("last-modified"):
        found["last_modified"] = headers["last-modified"]
    if next_url is not None:
        found["next"] = next_url
    return found
