"""Which page comes next: RFC 8288 Link headers, next URLs, cursors, page numbers and offsets.

Pure decisions from one fetched page (its decoded document, its ``Link`` header, its URL); the
poller shell does the requests. A page URL here is always absolute and carries its whole query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote_plus, urljoin, urlsplit, urlunsplit

from bridge.core.bodypath import with_body_value
from bridge.core.extract import ExtractionFailed, select_items
from bridge.core.paths import JsonPath
from bridge.models import Item

PageKind = Literal["link", "next_url", "cursor", "page", "offset"]


class PaginationFailed(ValueError):
    """A page does not say what comes next in a way the source's ``paginate`` understands."""


@dataclass(frozen=True)
class PageSpec:
    """A source's ``[sources.paginate]`` table as plain values (built once at load)."""

    kind: PageKind
    max_pages: int = 100
    next: JsonPath | None = None
    """next_url: where the next page's URL is."""
    cursor: JsonPath | None = None
    """cursor: where the next cursor is in the body."""
    cursor_from_last_item: JsonPath | None = None
    """cursor: the path, inside the page's last item, of the cursor (Stripe's ``$.id``)."""
    has_more: JsonPath | None = None
    """cursor: a boolean in the body; false ends the list."""
    param: str | None = None
    """cursor / page / offset: the query parameter carrying the cursor, page number or offset."""
    body_param: tuple[str, ...] | None = None
    """cursor: the dotted path in the JSON body carrying the cursor instead (``variables.after``)."""
    start: int = 0
    """page / offset: the first page number or offset (sent on the first page too)."""
    size_param: str | None = None
    size: int | None = None
    """page / offset: the page size sent as ``size_param``; a shorter page is the last one."""


@dataclass(frozen=True)
class Link:
    """One link-value of a ``Link`` header."""

    target: str
    rels: frozenset[str]
    params: Mapping[str, str]


def parse_link_header(value: str, base_url: str) -> list[Link]:
    """Parse an RFC 8288 ``Link`` header; targets are resolved against ``base_url``.

    Commas inside ``<…>`` or quoted strings do not split links; ``rel`` may hold several
    space-separated relation types and is compared case-insensitively. Malformed link-values
    are skipped rather than guessed at.
    """
    links: list[Link] = []
    pos, n = 0, len(value)
    while pos < n:
        while pos < n and value[pos] in " \t,":
            pos += 1
        if pos >= n:
            break
        if value[pos] != "<":
            pos = _skip_to_next_link(value, pos)
            continue
        end = value.find(">", pos + 1)
        if end < 0:
            break
        target = value[pos + 1 : end].strip()
        pos = end + 1
        params: dict[str, str] = {}
        while True:
            while pos < n and value[pos] in " \t":
                pos += 1
            if pos >= n or value[pos] != ";":
                break
            pos += 1
            name, param_value, pos = _read_param(value, pos)
            if name and name not in params:  # RFC 8288 §3.3: the first occurrence wins
                params[name] = param_value
        rels = frozenset(r.lower() for r in params.get("rel", "").split())
        links.append(Link(urljoin(base_url, target), rels, params))
        pos = _skip_to_next_link(value, pos)
    return links


def _read_param(value: str, pos: int) -> tuple[str, str, int]:
    n = len(value)
    start = pos
    while pos < n and value[pos] not in "=;,":
        pos += 1
    name = value[start:pos].strip().lower().rstrip("*")
    if pos >= n or value[pos] != "=":
        return name, "", pos
    pos += 1
    while pos < n and value[pos] in " \t":
        pos += 1
    if pos < n and value[pos] == '"':
        pos += 1
        out = []
        while pos < n and value[pos] != '"':
            if value[pos] == "\\" and pos + 1 < n:
                pos += 1
            out.append(value[pos])
            pos += 1
        return name, "".join(out), pos + 1
    start = pos
    while pos < n and value[pos] not in ";,":
        pos += 1
    return name, value[start:pos].strip(), pos


def _skip_to_next_link(value: str, pos: int) -> int:
    quoted = False
    while pos < len(value):
        ch = value[pos]
        if ch == '"':
            quoted = not quoted
        elif ch == "\\" and quoted:
            pos += 1
        elif ch == "," and not quoted:
            return pos + 1
        pos += 1
    return pos


def next_link(header_values: Sequence[str], base_url: str) -> str | None:
    """The target of the first ``rel="next"`` link in the given ``Link`` header lines."""
    for line in header_values:
        for link in parse_link_header(line, base_url):
            if "next" in link.rels:
                return link.target
    return None


def with_params(url: str, params: Mapping[str, Any]) -> str:
    """``url`` with ``params`` set in its query (replacing any of the same name).

    The rest of the query is kept byte for byte: servers that sign or compare URLs see the
    pairs they sent in a next link unchanged.
    """
    if not params:
        return url
    parts = urlsplit(url)
    kept = [
        pair
        for pair in parts.query.split("&")
        if pair and unquote_plus(pair.split("=", 1)[0]) not in params
    ]
    added = [
        f"{quote(str(k), safe='')}={quote(_param_text(v), safe='')}" for k, v in params.items()
    ]
    return urlunsplit(parts._replace(query="&".join(kept + added)))


def without_params(url: str, names: Iterable[str]) -> str:
    """``url`` without the query parameters ``names`` (the rest kept byte for byte)."""
    drop = set(names)
    parts = urlsplit(url)
    pairs = parts.query.split("&") if parts.query else []
    kept = [p for p in pairs if p and unquote_plus(p.split("=", 1)[0]) not in drop]
    if len(kept) == len(pairs):
        return url
    return urlunsplit(parts._replace(query="&".join(kept)))


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def first_page_url(spec: PageSpec | None, url: str) -> str:
    """The first page's URL: ``url`` plus the page/offset start and size, when those apply."""
    if spec is None or spec.kind not in ("page", "offset"):
        return url
    assert spec.param is not None  # noqa: S101 - set by the config for these kinds
    params: dict[str, Any] = {spec.param: spec.start}
    if spec.size_param and spec.size is not None:
        params[spec.size_param] = spec.size
    return with_params(url, params)


@dataclass(frozen=True)
class Page:
    """What a next-page decision may look at: one fetched and decoded page."""

    url: str
    """The URL the page was requested from; the next cursor, page or offset is set in it."""
    doc: Any
    link_headers: Sequence[str] = ()
    items_path: JsonPath | None = None
    """The source's ``items`` path: the page's length and last item are taken from its array."""
    response_url: str | None = None
    """Where the page came from after redirects (relative next links resolve against it)."""

    @property
    def base_url(self) -> str:
        return self.response_url or self.url


def next_page_url(spec: PageSpec | None, page: Page) -> str | None:
    """The URL of the page after ``page``, or None when ``page`` is the last one.

    Raise PaginationFailed when the page's pagination data is present but unusable.
    """
    if spec is None:
        return None
    if spec.kind == "link":
        return next_link(page.link_headers, page.base_url)
    if spec.kind == "next_url":
        assert spec.next is not None  # noqa: S101
        value = _single(page.doc, spec.next, "next")
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise PaginationFailed(f"next URL at {spec.next.text!r} is not a string: {value!r}")
        return urljoin(page.base_url, value)
    if spec.kind == "cursor":
        return _next_cursor_url(spec, page)
    return _next_numbered_url(spec, page)


def _single(doc: Any, path: JsonPath, what: str) -> Any:
    found = path.find(doc) if isinstance(doc, dict | list) else []
    if not found:
        return None
    if len(found) > 1:
        raise PaginationFailed(f"{what} path {path.text!r} matched {len(found)} values")
    return found[0]


def _raw_items(page: Page) -> list[Any]:
    """The page's items before any filter: a filter must not make a full page look short."""
    if page.items_path is None:
        return page.doc if isinstance(page.doc, list) else []
    container = page.items_path.container()
    try:
        if container is not None:
            found = container.find(page.doc)
            if len(found) == 1 and isinstance(found[0], list):
                return list(found[0])
        return select_items(page.doc, page.items_path)
    except ExtractionFailed:
        return []


def next_page_body(spec: PageSpec, page: Page, body: Any) -> dict[str, Any] | None:
    """The request body of the page after ``page`` (cursor in the body), or None at the end.

    Only for ``cursor`` pagination with ``body_param``; the URL stays the same.
    """
    assert spec.kind == "cursor" and spec.body_param is not None  # noqa: S101
    cursor = _next_cursor(spec, page)
    if cursor is None:
        return None
    return with_body_value(body, spec.body_param, cursor)


def _next_cursor_url(spec: PageSpec, page: Page) -> str | None:
    assert spec.param is not None  # noqa: S101
    cursor = _next_cursor(spec, page)
    return None if cursor is None else with_params(page.url, {spec.param: cursor})


def _next_cursor(spec: PageSpec, page: Page) -> Any:
    if spec.has_more is not None:
        more = _single(page.doc, spec.has_more, "has_more")
        if more is None or more is False:
            return None
        if more is not True:
            raise PaginationFailed(f"has_more at {spec.has_more.text!r} is not a boolean: {more!r}")
    if spec.cursor is not None:
        cursor = _single(page.doc, spec.cursor, "cursor")
        if spec.has_more is not None and (cursor is None or cursor == ""):
            # GraphQL's hasNextPage true with a null endCursor: stopping would cut the list
            raise PaginationFailed(
                f"has_more at {spec.has_more.text!r} is true but there is no cursor at "
                f"{spec.cursor.text!r}"
            )
    else:
        assert spec.cursor_from_last_item is not None  # noqa: S101
        raw = _raw_items(page)
        if not raw:
            if spec.has_more is not None:
                raise PaginationFailed(
                    f"has_more at {spec.has_more.text!r} is true but the page has no items "
                    "to take the next cursor from"
                )
            return None
        cursor = _single(raw[-1], spec.cursor_from_last_item, "cursor_from_last_item")
        if cursor is None and spec.has_more is not None:
            raise PaginationFailed(
                f"the page's last item has no cursor at {spec.cursor_from_last_item.text!r}"
            )
    if cursor is None or cursor == "" or cursor is False:
        return None
    if isinstance(cursor, dict | list):
        raise PaginationFailed(f"cursor is not a string or number: {cursor!r}")
    return cursor


def _next_numbered_url(spec: PageSpec, page: Page) -> str | None:
    assert spec.param is not None  # noqa: S101
    count = len(_raw_items(page))
    if count == 0 or (spec.size is not None and count < spec.size):
        return None
    current = dict(parse_qsl(urlsplit(page.url).query, keep_blank_values=True)).get(spec.param)
    try:
        position = int(current) if current is not None else spec.start
    except ValueError as exc:
        raise PaginationFailed(f"{spec.param}={current!r} in {page.url} is not a number") from exc
    step = 1 if spec.kind == "page" else count
    return with_params(page.url, {spec.param: position + step})


def combine_pages(pages: Sequence[Sequence[Item]]) -> list[Item]:
    """The items of all pages in order; a key seen on two pages fails the whole list.

    A repeated key means the list moved while it was being paged (an insert shifted items onto
    the next page, so another may have been skipped): such a list cannot be trusted for deletes.
    """
    if len(pages) == 1:
        return list(pages[0])
    out: list[Item] = []
    first_page: dict[str, int] = {}
    for number, items in enumerate(pages, start=1):
        for item in items:
            seen = first_page.get(item.key_text)
            if seen is not None:
                raise PaginationFailed(
                    f"key {item.key_text!r} appears on page {seen} and page {number}: the list "
                    "changed while it was being paged; the poll is retried next time"
                )
            first_page[item.key_text] = number
            out.append(item)
    return out


def same_origin(a: str, b: str) -> bool:
    """Whether two absolute URLs share scheme, host and port."""
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)
