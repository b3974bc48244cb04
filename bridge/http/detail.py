"""Detail fetch: one request per new or changed list entry, a bounded number at once.

Each request is the source's own: its auth, headers, timeout, size cap, TLS client and the
per-host politeness of the shared :class:`~bridge.http.poller.HostLimiter`, and the connection
guard of ``deny_private_targets``. At most ``detail.concurrency`` requests of one poll are in
flight (each still waits for a slot of its host). The first failure cancels the rest and fails
the poll, so nothing of it is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.config import SourceConfig
from bridge.core.detail import (
    DetailFailed,
    detail_item,
    detail_url,
    merge_details,
    needs_detail,
)
from bridge.core.formats import FormatError, parse_document
from bridge.core.pagination import PaginationFailed, combine_pages
from bridge.errors import BridgeError, ExtractError, PollError
from bridge.http.auth import SourceAuth
from bridge.http.poller import Fetched, Poller
from bridge.models import Item
from bridge.store import SnapshotHashes


@dataclass(frozen=True)
class Details:
    """The poll's items with details in place, and how many detail requests it took."""

    items: list[Item]
    requests: int


async def resolve_details(
    poller: Poller,
    source: SourceConfig,
    pages: Sequence[Sequence[Item]],
    old: SnapshotHashes,
    now: datetime,
    *,
    auth: SourceAuth | None = None,
    refetch_all: bool = False,
) -> Details:
    """Fetch the details ``source``'s list entries need and return the poll's items.

    Entries whose list hash matches the one stored with their item are not fetched; they are
    carried by stand-ins holding the stored hash (see :func:`bridge.core.detail.merge_details`).
    """
    spec = source.detail_spec
    assert spec is not None  # noqa: S101 - called for detail sources only
    # O(N) over the list: off the event loop, like the rest of the per-item work
    entries, wanted, urls = await asyncio.to_thread(_plan, source, pages, old, refetch_all)
    fetched: dict[str, Item] = {}
    todo = iter(zip(wanted, urls, strict=True))

    async def worker() -> None:
        for entry, url in todo:  # one shared iterator: each entry is taken once
            fetched[entry.key_text] = await _fetch_one(poller, source, entry, url, now, auth)

    workers = min(spec.concurrency, len(wanted))
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
    except BaseExceptionGroup as group_error:
        raise _first_error(group_error) from None
    items = await asyncio.to_thread(merge_details, entries, fetched, old.hashes)
    return Details(items, len(wanted))


def _plan(
    source: SourceConfig, pages: Sequence[Sequence[Item]], old: SnapshotHashes, refetch_all: bool
) -> tuple[list[Item], list[Item], list[str]]:
    """The list entries, those whose detail is fetched, and their detail URLs."""
    spec = source.detail_spec
    assert spec is not None  # noqa: S101
    try:
        entries = combine_pages(pages)
    except PaginationFailed as exc:
        raise ExtractError(source.name, str(exc), url=source.url) from exc
    wanted = needs_detail(entries, old.hashes, old.list_hashes or {}, refetch_all=refetch_all)
    try:
        urls = [detail_url(spec.url, entry) for entry in wanted]
    except DetailFailed as exc:
        raise ExtractError(source.name, str(exc), url=source.url) from exc
    return entries, wanted, urls


async def _fetch_one(
    poller: Poller,
    source: SourceConfig,
    entry: Item,
    url: str,
    now: datetime,
    auth: SourceAuth | None,
) -> Item:
    spec = source.detail_spec
    assert spec is not None  # noqa: S101
    try:
        response = await poller.fetch(
            source.name,
            url,
            headers=source.headers,
            timeout_s=source.timeout.total_seconds(),
            max_bytes=source.max_bytes,
            now=now,
            auth=auth,
            redirect_headers=source.redirect_headers,
        )
    except PollError as exc:
        # the stored error must say it was a detail request, and which
        raise PollError(
            source.name,
            f"detail of item {entry.key_text!r} ({exc.url or url}): {exc.cause}",
            url=exc.url or url,
            status=exc.status,
            retry_after_s=exc.retry_after_s,
        ) from exc
    doc = await asyncio.to_thread(_decode, response, source)
    try:
        return detail_item(entry, doc, spec)
    except DetailFailed as exc:
        raise ExtractError(source.name, str(exc), url=response.url) from exc


def _decode(fetched: Fetched, source: SourceConfig) -> Any:
    """A detail response's document: JSON for a JSON source, else by its content type."""
    fmt = "json" if source.format == "json" else "auto"
    try:
        return parse_document(fetched.body, fmt, content_type=fetched.content_type)
    except FormatError as exc:
        ctype = fetched.content_type or "no content type"
        raise ExtractError(source.name, f"detail ({ctype}): {exc}", url=fetched.url) from exc


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report: the first of the project's own, else the first of any kind."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, BridgeError):
            return exc
    return leaves[0]
