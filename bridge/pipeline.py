"""One poll of one source: fetch, extract, diff, and commit snapshot + events in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from bridge.analysis_pool import AnalysisPool
from bridge.config import Config, SourceConfig
from bridge.core.analysis import plan_items
from bridge.core.confirm import confirm_missing
from bridge.core.detail import list_hash_refreshes
from bridge.core.diff import DiffPlan, build_changes
from bridge.core.extract import ExtractionFailed, extract_items
from bridge.core.formats import FormatError, parse_document
from bridge.core.graphql import graphql_error
from bridge.core.guards import decide_hold, deletion_digest, excessive_deletes
from bridge.core.hashing import hash_value
from bridge.core.pagination import PaginationFailed, combine_pages
from bridge.core.retry import MAX_RETRY_AFTER_S, poll_backoff
from bridge.core.routing import ListenerRoute, route_change
from bridge.errors import ExtractError, PollError
from bridge.eventlog import Baseline, TrackedState, analyse_append, append_stop, baseline_mode
from bridge.http.auth import Authenticators
from bridge.http.detail import resolve_details
from bridge.http.pages import Pages, conditional, walk_pages
from bridge.http.poller import Fetched, Poller
from bridge.http.spool import remove_spools
from bridge.incremental import IncrementalPoll, WindowSizes, plan_incremental
from bridge.models import Change, Event, Item, SourceState
from bridge.store import PollCommit, SeenKeys, SeenUpdate, SnapshotHashes, StaleSnapshot, Store

log = logging.getLogger("pollbridge.poll")


@dataclass
class PollOutcome:
    """What a poll did, for logs, the CLI and metrics."""

    source: str
    ok: bool
    result: str
    """ok | unchanged | baseline | rebaseline | held | error"""
    duration_s: float
    item_count: int = 0
    changes: list[Change] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    error: str | None = None
    committed: bool = False
    pages: int = 0
    """Requests made for the list (a 304 page counts)."""
    detail_fetches: int = 0
    """Detail requests made ([sources.detail]): one per new or changed list entry."""
    not_modified: bool = False
    """Every page answered 304 Not Modified."""
    held: str | None = None
    """Why the poll was held (result ``held``) or why a held result was applied."""
    held_polls: int = 0
    not_before: datetime | None = None
    """After a failure: the source is not polled again before this time (backoff, Retry-After)."""
    pending_deletes: dict[str, int] = field(default_factory=dict)
    """``confirm_deletes``: missing items not deleted yet -> polls missing so far."""
    remembered: int | None = None
    """An append source: the keys remembered once this poll is recorded."""
    stopped: bool = False
    """An append source's walk stopped at a page holding a seen key (``stop_at_seen``)."""
    asked: str | None = None
    """An incremental source: what the poll asked for (a window since a cursor, or the list)."""
    cursor_sent: str | None = None
    cursor: str | None = None
    """An incremental source: the cursor stored (or, in a dry run, that would be stored)."""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Analysis:
    items: list[Item]
    """Every item; from a worker, only the upserts (every item in a baseline)."""
    plan: DiffPlan
    upserts: list[Item]
    """The created and updated items, in response order."""
    item_count: int


def source_fingerprint(source: SourceConfig) -> str:
    """What defines a source's items; when it changes, the next poll re-baselines."""
    return hash_value(source.fingerprint_fields())


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


_gc_paused = _GCPause()


def _decode_and_extract(fetched: Fetched, source: SourceConfig) -> tuple[Any, list[Item]]:
    """One page: its decoded document (for the next-page decision) and its items."""
    with _gc_paused():
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


def _analyse(pages: list[list[Item]], source: SourceConfig, old: SnapshotHashes) -> _Analysis:
    with _gc_paused():
        return _analyse_pages(pages, source, old)


def _analyse_pages(pages: list[list[Item]], source: SourceConfig, old: SnapshotHashes) -> _Analysis:
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
    return _Analysis(items, plan, upserts, planned.item_count)


_FREE_SLICE = 5000
_CHANGES_ON_LOOP = 200
"""Up to this many changes are built on the event loop (a thread hand-off costs more)."""


def _release(lists: list[list[Item]]) -> None:
    """Drop a response's items a slice at a time, off the event loop.

    The last reference to 100k items going at once frees them all in one C call that holds the
    GIL, and so stalls the event loop, for ~130 ms (560 ms at 1M).
    """
    for items in lists:
        while items:
            del items[-_FREE_SLICE:]


class Pipeline:
    """Polls sources and records their changes; shared by the daemon and the CLI.

    One class on purpose: a poll's outcomes (unchanged, baseline, held, committed, failed)
    each update the source's state and backoff in the store, and the no-events-from-a-bad-poll
    rule is readable only where every branch is in view. The page walk is
    :mod:`bridge.http.pages`; the pure rules are in :mod:`bridge.core`.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        poller: Poller,
        *,
        clock: Callable[[], datetime],
        on_commit: Callable[[list[Event]], None] | None = None,
        rand: Callable[[], float] = random.random,
        authenticators: Authenticators | None = None,
        analysis: AnalysisPool | None = None,
    ):
        self.config = config
        self.store = store
        self.poller = poller
        self.clock = clock
        self.on_commit = on_commit
        self.rand = rand
        self.auth = authenticators or Authenticators(poller.client)
        self.analysis = analysis
        """Where a large single-page response is analysed (None: always in process)."""
        self._routes: list[ListenerRoute] = config.routes()
        self._hashes: dict[str, SnapshotHashes] = {}
        self._tracked = TrackedState(store)
        self._locks: dict[str, asyncio.Lock] = {}
        self._lease_tokens: dict[str, int | None] = {}
        self._caps = WindowSizes()

    async def _route(
        self, source: str, changes: Sequence[Change], now: datetime
    ) -> list[list[str]]:
        """Each change's listeners; ``match`` filters (JSONPath, ~0.1 ms each) and many changes
        are routed off the loop."""
        routes = self._routes

        def route_all() -> list[list[str]]:
            return [route_change(source, c, routes, now) for c in changes]

        filtered = any(r.match is not None for r in routes)
        if (filtered and len(changes) > 10) or len(changes) > _CHANGES_ON_LOOP:
            return await asyncio.to_thread(route_all)
        return route_all()

    def reconfigure(self, config: Config) -> None:
        """Take a new configuration (reload); cached snapshots stay valid by version."""
        self.config = config
        self._routes = config.routes()

    async def _snapshot(self, source: str, *, detail: bool = False) -> SnapshotHashes:
        cached = self._hashes.get(source)
        if cached is not None and (cached.list_hashes is not None or not detail):
            version = await self.store.snapshot_version(source)
            if version == cached.version:
                return cached
        fresh = await self.store.load_hashes(source, list_hashes=detail)
        self._hashes[source] = fresh
        return fresh

    async def postponed_until(self, source: str, now: datetime) -> datetime | None:
        """When ``source`` is backing off or was told to wait (Retry-After): until when."""
        state = await self.store.get_source_state(source)
        if state is not None and state.not_before is not None and now < state.not_before:
            return state.not_before
        return None

    async def poll(
        self, source: SourceConfig, *, commit: bool = True, lease_token: int | None = None
    ) -> PollOutcome:
        """Poll ``source`` once. With ``commit`` the result is recorded; otherwise a dry run.

        ``lease_token`` fences the commit: it is refused if the source's lease moved meanwhile.
        """
        lock = self._locks.setdefault(source.name, asyncio.Lock())
        async with lock:
            self._lease_tokens[source.name] = lease_token
            return await self._poll(source, commit)

    async def _poll(self, source: SourceConfig, commit: bool) -> PollOutcome:
        started = time.monotonic()
        now = self.clock()
        state: SourceState | None = None
        try:
            state = await self.store.get_source_state(source.name)
            fingerprint = source_fingerprint(source)
            first = state is None or state.fingerprint is None
            rebaseline = not first and state is not None and state.fingerprint != fingerprint
            baseline = baseline_mode(source, first, rebaseline)
            seen = await self._tracked.seen(source.name) if source.mode == "append" else None
            inc = plan_incremental(source, state, first=first, rebaseline=rebaseline, now=now)
            # a changed item definition needs the body even if the API's data did not change;
            # while deletions are pending, every poll must look at the list itself; an
            # incremental window asks for a new range each time
            fresh = baseline is not None or inc is not None or await self._tracked.pending(source)
            ask = state.validators if state and conditional(source) and not fresh else None

            spooled: list[Fetched] = []

            async def decode(fetched: Fetched) -> tuple[Any, list[Item]]:
                if fetched.spool is not None:  # analysed in a worker once the walk is done
                    spooled.append(fetched)
                    return None, []
                return await asyncio.to_thread(_decode_and_extract, fetched, source)

            try:
                pages = await walk_pages(
                    self.poller,
                    source,
                    now,
                    decode=decode,
                    redact=self.config.redact,
                    auth=self.auth.for_source(source),
                    validators=ask,
                    stop=None if seen is None else append_stop(source, seen, baseline),
                    request=inc.request if inc is not None else None,
                    spool=self.analysis.spool_policy(source) if self.analysis else None,
                )
                ctx = _Context(
                    source,
                    state,
                    now,
                    started,
                    fingerprint,
                    commit,
                    pages.validators if conditional(source) and inc is None else {},
                    pages.requests,
                    inc,
                )
                if pages.items is None:
                    return await self._unchanged(ctx, state.item_count if state else 0, True)
                old = await self._snapshot(source.name, detail=source.detail is not None)
                if seen is not None:
                    return await self._append(ctx, pages, seen, old, baseline)
                listed, details = pages.items, 0
                if source.detail is not None:
                    resolved = await resolve_details(
                        self.poller,
                        source,
                        pages.items,
                        old,
                        now,
                        auth=self.auth.for_source(source),
                        refetch_all=first or rebaseline,
                    )
                    listed, details = [resolved.items], resolved.requests
                if inc is not None and inc.window:
                    outcome = await self._window(ctx, inc, listed, old)
                    outcome.detail_fetches = details
                    return outcome
                if inc is not None:
                    cursor, listed = await asyncio.to_thread(inc.complete_list, listed, old.hashes)
                    ctx = replace(ctx, cursor=cursor, reconciled_at=now)
                if spooled:
                    analysis = await self._analyse_apart(
                        spooled[0], source, old, first or rebaseline
                    )
                else:
                    analysis = await asyncio.to_thread(_analyse, listed, source, old)
            finally:
                if spooled:
                    await remove_spools([f.spool for f in spooled if f.spool is not None])
            try:
                if first or rebaseline:
                    outcome = await self._baseline(ctx, analysis, old, rebaseline)
                else:
                    outcome = await self._diff(ctx, analysis, old)
                outcome.detail_fetches = details
                return _annotated(outcome, ctx)
            finally:
                await asyncio.to_thread(_release, [*pages.items, analysis.items])
        except PollError as exc:
            return await self._failed(source, state, exc, now, started, commit)
        except StaleSnapshot as exc:
            self._hashes.pop(source.name, None)
            self._tracked.forget(source.name)
            duration = time.monotonic() - started
            return PollOutcome(source.name, False, "error", duration, error=str(exc))

    async def _analyse_apart(
        self, fetched: Fetched, source: SourceConfig, old: SnapshotHashes, keep_all: bool
    ) -> _Analysis:
        """A spooled response, analysed in a worker process (bridge.analysis_pool)."""
        assert self.analysis is not None and fetched.spool is not None  # noqa: S101
        planned = await self.analysis.analyse(
            source, fetched.spool, fetched.content_type, fetched.url, old.hashes, keep_all=keep_all
        )
        return _Analysis(planned.upserts, planned.plan, planned.upserts, planned.item_count)

    async def _failed(
        self,
        source: SourceConfig,
        state: SourceState | None,
        exc: PollError,
        now: datetime,
        started: float,
        commit: bool,
    ) -> PollOutcome:
        duration = time.monotonic() - started
        failures = (state.consecutive_failures if state else 0) + 1
        delay = poll_backoff(
            source.interval_s or 60.0, failures, source.max_backoff.total_seconds(), self.rand()
        )
        if exc.retry_after_s is not None:
            delay = max(delay, min(exc.retry_after_s, MAX_RETRY_AFTER_S))
        # Retry-After counts from the answer, not from the start of a long poll
        not_before = self.clock() + timedelta(seconds=delay) if delay > 0 else None

        # an API may echo the credentials it was sent: never store or report them
        def redact(text: str) -> str:
            # runtime OAuth2 tokens are secrets the configuration cannot know
            return self.config.redactor.with_secrets(self.auth.held_tokens()).redact(text)

        if commit:
            await self.store.record_poll_failure(
                source.name, now, duration, redact(exc.cause), not_before=not_before
            )
        return PollOutcome(
            source.name, False, "error", duration, error=redact(str(exc)), not_before=not_before
        )

    async def _unchanged(self, ctx: _Context, item_count: int, not_modified: bool) -> PollOutcome:
        duration = time.monotonic() - ctx.started
        if ctx.commit:
            await self.store.record_poll_unchanged(
                ctx.source.name, ctx.now, duration, result="unchanged", validators=ctx.validators
            )
            known = (ctx.state.cursor, ctx.state.reconciled_at) if ctx.state else (None, None)
            if ctx.incremental is not None and (ctx.cursor, ctx.reconciled_at) != known:
                # unchanged items moved the cursor, or a complete list found nothing new
                fields = {"cursor": ctx.cursor, "reconciled_at": ctx.reconciled_at}
                await self.store.update_source_state(ctx.source.name, **fields)
            state = ctx.state
            if state is not None and (state.held_reason or state.accept_requested):
                log.info(
                    "poll %s: the held result did not repeat; hold released",
                    ctx.source.name,
                    extra={"source": ctx.source.name},
                )
                await self.store.update_source_state(
                    ctx.source.name,
                    held_reason=None,
                    held_polls=0,
                    held_digest=None,
                    accept_requested=False,
                )
        return PollOutcome(
            ctx.source.name,
            True,
            "unchanged",
            duration,
            item_count,
            pages=ctx.requests,
            not_modified=not_modified,
        )

    async def _baseline(
        self, ctx: _Context, analysis: _Analysis, old: SnapshotHashes, rebaseline: bool
    ) -> PollOutcome:
        source = ctx.source
        items = analysis.items
        mode = source.rebaseline if rebaseline else source.baseline
        changes: list[Change] = []
        if mode == "emit":
            # a patch per item: off the event loop like the rest of the per-item work
            plan = DiffPlan([i.key_text for i in items], [], [])
            changes = await asyncio.to_thread(build_changes, plan, items, {})
        result = "rebaseline" if rebaseline else "baseline"
        if rebaseline and ctx.commit:
            log.warning(
                "poll %s: what defines its items changed (url, params, items, key, ignore, "
                "fields or paginate); re-baselining %d item(s) %s",
                source.name,
                len(items),
                "with a created event each" if mode == "emit" else "without events",
                extra={"source": source.name},
            )
        deletes = analysis.plan.deleted
        return await self._record(ctx, len(items), items, deletes, changes, result, old)

    async def _diff(self, ctx: _Context, analysis: _Analysis, old: SnapshotHashes) -> PollOutcome:
        source, state = ctx.source, ctx.state
        missing = await self._tracked.missing(source.name, old.version)
        confirmation = confirm_missing(missing, analysis.plan.deleted, source.confirm_deletes)
        # an item missing from fewer than confirm_deletes polls in a row keeps its snapshot
        plan = DiffPlan(analysis.plan.created, analysis.plan.updated, confirmation.confirmed)
        if plan.empty and not analysis.upserts and confirmation.pending == missing:
            return await self._unchanged(ctx, analysis.item_count, False)
        reason = excessive_deletes(len(old.hashes), len(plan.deleted), source.delete_limit)
        applied: str | None = None
        if reason is not None:
            decision = decide_hold(
                reason,
                deletion_digest(plan.deleted),
                held_digest=state.held_digest if state else None,
                held_polls=state.held_polls if state else 0,
                confirm_polls=source.confirm_polls,
                accept_requested=state.accept_requested if state else False,
            )
            if decision.action == "hold":
                return await self._hold(
                    ctx, reason, decision.held_polls, decision.digest, analysis.item_count
                )
            how = (
                "accepted by the operator"
                if decision.action == "accepted"
                else f"seen on {decision.held_polls} consecutive polls"
            )
            applied = f"{reason}; {how}"
            if ctx.commit:
                log.warning(
                    "poll %s: applying the held result (%s)",
                    source.name,
                    applied,
                    extra={"source": source.name},
                )
        elif state is not None and state.held_reason and ctx.commit:
            log.info(
                "poll %s: the held result did not repeat; hold released",
                source.name,
                extra={"source": source.name},
            )
        # deletes = false: deleted items leave the snapshot without an event
        emitted = plan if source.deletes else DiffPlan(plan.created, plan.updated, [])
        if ctx.incremental is not None:
            emitted = ctx.incremental.in_scope(emitted, analysis.upserts)
        before = await self.store.load_items(source.name, emitted.needs_before)
        # only the changed items, so this costs O(k) on the event loop, not O(N)
        upserts = analysis.upserts
        if len(upserts) + len(emitted.deleted) > _CHANGES_ON_LOOP:
            # a patch per change: 10k of them would hold the loop for ~0.3 s
            changes = await asyncio.to_thread(
                build_changes, emitted, upserts, before, source.ignore_paths
            )
        else:
            changes = build_changes(emitted, upserts, before, source.ignore_paths)
        # only list hashes refreshed (detail fetch): written, but nothing changed
        counted = confirmation.pending != missing
        result = "ok" if changes or plan.deleted or counted else "unchanged"
        outcome = await self._record(
            ctx,
            analysis.item_count,
            upserts,
            plan.deleted,
            changes,
            result,
            old,
            missing=confirmation.pending,
        )
        outcome.held = applied
        outcome.pending_deletes = confirmation.pending
        return outcome

    async def _append(
        self, ctx: _Context, pages: Pages, seen: SeenKeys, old: SnapshotHashes, baseline: Baseline
    ) -> PollOutcome:
        step = await asyncio.to_thread(analyse_append, ctx, pages.items, seen, baseline, old)
        if baseline is None and not step.changes and not step.seen.forget:
            outcome = await self._unchanged(ctx, len(step.entries), False)
        else:  # an append source keeps keys, not items: a snapshot from another mode goes
            deletes, result = list(old.hashes), step.result
            outcome = await self._record(
                ctx, len(step.entries), (), deletes, step.changes, result, old, seen=step.seen
            )
        outcome.remembered, outcome.stopped = step.remembered, pages.stopped
        return outcome

    async def _window(
        self, ctx: _Context, inc: IncrementalPoll, pages: list[list[Item]], old: SnapshotHashes
    ) -> PollOutcome:
        """A window of changes: what it returned is compared by key and hash; nothing absent
        from it is deleted (only what ``deleted_when`` selects)."""
        source = ctx.source
        found = await asyncio.to_thread(inc.analyse, source, pages, old.hashes, self._caps)
        ctx = replace(ctx, cursor=found.cursor, reconciled_at=inc.reconciled_at)
        if found.plan.empty:
            outcome = await self._unchanged(ctx, found.item_count, False)
        else:
            before = await self.store.load_items(source.name, found.emitted.needs_before)
            changes = build_changes(found.emitted, found.upserts, before, source.ignore_paths)
            outcome = await self._record(
                ctx,
                found.item_count,
                found.upserts,
                found.plan.deleted,
                [] if found.silent else changes,
                found.result,
                old,
            )
        if found.warning is not None:
            log.warning("poll %s: %s", source.name, found.warning, extra={"source": source.name})
            outcome.warnings.append(found.warning)
        return _annotated(outcome, ctx)

    async def _hold(
        self,
        ctx: _Context,
        reason: str,
        held_polls: int,
        digest: str | None,
        item_count: int,
    ) -> PollOutcome:
        source = ctx.source
        duration = time.monotonic() - ctx.started
        if ctx.commit:
            # the validators stay those of the snapshot, so the next poll fetches in full again
            await self.store.update_source_state(
                source.name,
                last_poll_at=ctx.now,
                last_result="held",
                last_error=None,
                last_duration_s=duration,
                consecutive_failures=0,
                not_before=None,
                held_reason=reason,
                held_polls=held_polls,
                held_digest=digest,
            )
            log.warning(
                "poll %s held: %s; no events sent, snapshot unchanged. Seen %d of %d times: it "
                "is applied when seen %d times in a row, or at the next poll after "
                "`pollbridge accept %s`",
                source.name,
                reason,
                held_polls,
                source.confirm_polls,
                source.confirm_polls,
                source.name,
                extra={"source": source.name},
            )
        return PollOutcome(
            source.name,
            True,
            "held",
            duration,
            item_count,
            pages=ctx.requests,
            held=reason,
            held_polls=held_polls,
        )

    async def _record(
        self,
        ctx: _Context,
        item_count: int,
        upserts: Sequence[Item],
        deletes: Sequence[str],
        changes: list[Change],
        result: str,
        old: SnapshotHashes,
        *,
        seen: SeenUpdate | None = None,
        missing: dict[str, int] | None = None,
    ) -> PollOutcome:
        source = ctx.source
        if not ctx.commit:
            duration = time.monotonic() - ctx.started
            return PollOutcome(
                source.name, True, result, duration, item_count, changes, pages=ctx.requests
            )
        routes = await self._route(source.name, changes, ctx.now)
        duration = time.monotonic() - ctx.started
        events = await self.store.commit_poll(
            PollCommit(
                source=source.name,
                polled_at=ctx.now,
                duration_s=duration,
                upserts=upserts,
                deletes=deletes,
                changes=changes,
                routes=routes,
                item_count=item_count,
                fingerprint=ctx.fingerprint,
                result=result,
                validators=ctx.validators,
                expected_version=old.version,
                lease_token=self._lease_tokens.get(source.name),
                seen=seen,
                missing=missing,
                cursor=ctx.cursor,
                reconciled_at=ctx.reconciled_at,
            )
        )
        self._tracked.committed(source.name, old.version + 1, ctx.now, seen, missing)
        # Updated in place: O(k), where a copy would cost O(N) on the event loop. Nothing else
        # holds this dict, and the source's lock keeps its polls one at a time.
        hashes, listed = old.hashes, old.list_hashes
        for k in deletes:
            hashes.pop(k, None)
            if listed is not None:
                listed.pop(k, None)
        for it in upserts:
            hashes[it.key_text] = it.hash
            if listed is not None and it.list_hash is not None:
                listed[it.key_text] = it.list_hash
        self._hashes[source.name] = SnapshotHashes(old.version + 1, hashes, listed)
        if events and self.on_commit is not None:
            self.on_commit(events)
        return PollOutcome(
            source.name,
            True,
            result,
            duration,
            item_count,
            changes,
            events,
            committed=True,
            pages=ctx.requests,
        )


@dataclass(frozen=True)
class _Context:
    """What every step of one poll needs to know."""

    source: SourceConfig
    state: SourceState | None
    now: datetime
    started: float
    fingerprint: str
    commit: bool
    validators: dict[str, dict[str, str]]
    """The validators to store with this poll's result."""
    requests: int
    incremental: IncrementalPoll | None = None
    cursor: str | None = None
    """An incremental source's cursor to store with this poll's result."""
    reconciled_at: datetime | None = None


def _annotated(outcome: PollOutcome, ctx: _Context) -> PollOutcome:
    """``outcome`` with what an incremental poll asked for and the cursor it stores."""
    inc = ctx.incremental
    if inc is not None:
        outcome.asked = inc.describe()
        outcome.cursor_sent = inc.sent
        outcome.cursor = ctx.cursor
    return outcome


def describe_outcome(outcome: PollOutcome) -> dict[str, Any]:
    """Fields for one log line about a poll."""
    counts = {"created": 0, "updated": 0, "deleted": 0}
    for c in outcome.changes:
        counts[c.type] += 1
    return {
        "source": outcome.source,
        "result": outcome.result,
        "items": outcome.item_count,
        "duration_ms": round(outcome.duration_s * 1000, 1),
        **counts,
    }
