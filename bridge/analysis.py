"""A response analysed in this process: decoded, extracted and planned against the snapshot.

Large single-page responses go to a worker process instead (:mod:`bridge.analysis_pool`); both
key and hash with :func:`bridge.core.extract.iter_keyed`, so the result is the same either way.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bridge.config import SourceConfig
from bridge.core.analysis import plan_items
from bridge.core.detail import list_hash_refreshes
from bridge.core.diff import DiffPlan
from bridge.core.extract import ExtractionFailed, extract_items
from bridge.core.formats import FormatError, parse_document
from bridge.core.graphql import graphql_error
from bridge.core.pagination import PaginationFailed, combine_pages
from bridge.errors import ExtractError, PollError
from bridge.http.poller import Fetched
from bridge.models import Item
from bridge.store import SnapshotHashes


@dataclass(frozen=True)
class Analysis:
    items: list[Item]
    """Every item; from a worker, only the upserts (every item in a baseline)."""
    plan: DiffPlan
    upserts: list[Item]
    """The created and updated items, in response order."""
    item_count: int


class _GCPause:
    """Holds off the cyclic GC while responses are decoded into many new containers.

    Decoding and extracting N items allocates ~3N containers that all live until the poll ends,
    so the collections they trigger walk an ever larger heap for nothing: three full
    collections ran inside one 100k-item poll (1.4-2.1 s). The GC is off while any analysis
    runs (reference counting still frees everything acyclic). When the last one ends, what is
    alive is frozen (moved out of the GC's reach, so no collection walks the items while the
    poll commits) and the GC resumes if it was on; the next analysis first unfreezes, so
    cyclic garbage frozen with them is still collected in time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()
                gc.disable()
                gc.unfreeze()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    gc.freeze()
                    if self._resume:
                        gc.enable()


gc_paused = _GCPause()
"""The one pause of this process; decoding a worker's results (bridge.analysis_pool) holds it
too."""


def decode_and_extract(fetched: Fetched, source: SourceConfig) -> tuple[Any, list[Item]]:
    """One page: its decoded document (for the next-page decision) and its items."""
    with gc_paused():
        return _decode_and_extract_page(fetched, source)


def _decode_and_extract_page(fetched: Fetched, source: SourceConfig) -> tuple[Any, list[Item]]:
    try:
        doc = parse_document(
            fetched.body,
            source.format,
            content_type=fetched.content_type,
            options=source.format_options,
        )
    except FormatError as exc:
        ctype = fetched.content_type or "no content type"
        raise ExtractError(source.name, f"response ({ctype}): {exc}", url=fetched.url) from exc
    problem = graphql_error(doc) if source.graphql is not None else None
    if problem is not None:  # a 200 that failed: its data (if any) is partial
        raise PollError(source.name, problem, url=fetched.url)
    try:
        return doc, extract_items(doc, source.list_spec)
    except ExtractionFailed as exc:
        raise ExtractError(source.name, str(exc), url=fetched.url) from exc


def analyse(pages: list[list[Item]], source: SourceConfig, old: SnapshotHashes) -> Analysis:
    with gc_paused():
        return _analyse_pages(pages, source, old)


def _analyse_pages(pages: list[list[Item]], source: SourceConfig, old: SnapshotHashes) -> Analysis:
    try:
        items = combine_pages(pages)
    except PaginationFailed as exc:
        raise ExtractError(source.name, str(exc), url=source.url) from exc
    # the function a worker runs too (bridge.analysis_worker): the same plan either way
    planned = plan_items(items, old.hashes)
    plan, upserts = planned.plan, planned.upserts
    if source.detail is not None:
        # an entry whose detail did not change: store its new list hash, send nothing
        changed = set(plan.created) | set(plan.updated)
        upserts = upserts + list_hash_refreshes(items, old.list_hashes or {}, changed)
    return Analysis(items, plan, upserts, planned.item_count)


_FREE_SLICE = 5000


def release(lists: list[list[Item]]) -> None:
    """Drop a response's items a slice at a time, off the event loop.

    The last reference to 100k items going at once frees them all in one C call that holds the
    GIL, and so stalls the event loop, for ~130 ms (560 ms at 1M).
    """
    for items in lists:
        while items:
            del items[-_FREE_SLICE:]
