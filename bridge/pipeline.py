"""One poll of one source: fetch, extract, diff, and commit snapshot + events in one transaction."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from bridge.analysis import Analysis, analyse, decode_and_extract, release
from bridge.analysis_pool import AnalysisPool
from bridge.config import Config, SourceConfig
from bridge.core.confirm import confirm_missing
from bridge.core.diff import DiffPlan, build_changes
from bridge.core.guards import decide_hold, deletion_digest, excessive_deletes
from bridge.core.hashing import hash_value
from bridge.errors import PollError
from bridge.eventlog import TrackedState, append_stop, baseline_mode
from bridge.http.auth import Authenticators
from bridge.http.detail import resolve_details
from bridge.http.pages import conditional, walk_pages
from bridge.http.poller import Fetched, Poller
from bridge.http.spool import remove_spools
from bridge.incremental import WindowSizes, plan_incremental
from bridge.models import Change, Event, Item, SourceState
from bridge.outcome import PollContext, PollOutcome, annotated
from bridge.recorder import CHANGES_ON_LOOP, PollRecorder
from bridge.steps import record_append, record_window
from bridge.store import SnapshotHashes, StaleSnapshot, Store

log = logging.getLogger("pollbridge.poll")


def source_fingerprint(source: SourceConfig) -> str:
    """What defines a source's items; when it changes, the next poll re-baselines."""
    return hash_value(source.fingerprint_fields())


class Pipeline:
    """Polls sources and records their changes; shared by the daemon and the CLI.

    It decides which outcome a poll gets (unchanged, baseline, held, committed, failed), so the
    no-events-from-a-bad-poll rule is readable in one place. The page walk is
    :mod:`bridge.http.pages`; in-process analysis :mod:`bridge.analysis` (large responses:
    :mod:`bridge.analysis_pool`); writing each outcome :mod:`bridge.recorder`; the incremental
    window and the append step :mod:`bridge.steps`; the pure rules :mod:`bridge.core`.
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
        self.auth = authenticators or Authenticators(poller.client)
        self.analysis = analysis
        """Where a large single-page response is analysed (None: always in process)."""
        self.recorder = PollRecorder(
            config,
            store,
            clock=clock,
            rand=rand,
            auth=self.auth,
            tracked=TrackedState(store),
            on_commit=on_commit,
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._windows = WindowSizes()

    def reconfigure(self, config: Config) -> None:
        """Take a new configuration (reload); cached snapshots stay valid by version."""
        self.config = config
        self.recorder.reconfigure(config)

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
            return await self._poll(source, commit, lease_token)

    async def _poll(
        self, source: SourceConfig, commit: bool, lease_token: int | None
    ) -> PollOutcome:
        started = time.monotonic()
        now = self.clock()
        state: SourceState | None = None
        try:
            state = await self.store.get_source_state(source.name)
            fingerprint = source_fingerprint(source)
            first = state is None or state.fingerprint is None
            rebaseline = not first and state is not None and state.fingerprint != fingerprint
            baseline = baseline_mode(source, first, rebaseline)
            seen = (
                await self.recorder.tracked.seen(source.name) if source.mode == "append" else None
            )
            inc = plan_incremental(source, state, first=first, rebaseline=rebaseline, now=now)
            # a changed item definition needs the body even if the API's data did not change;
            # while deletions are pending, every poll must look at the list itself; an
            # incremental window asks for a new range each time
            fresh = (
                baseline is not None
                or inc is not None
                or await self.recorder.tracked.pending(source)
            )
            ask = state.validators if state and conditional(source) and not fresh else None

            spooled: list[Fetched] = []

            async def decode(fetched: Fetched) -> tuple[Any, list[Item]]:
                if fetched.spool is not None:  # analysed in a worker once the walk is done
                    spooled.append(fetched)
                    return None, []
                return await asyncio.to_thread(decode_and_extract, fetched, source)

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
                ctx = PollContext(
                    source,
                    state,
                    now,
                    started,
                    fingerprint,
                    commit,
                    pages.validators if conditional(source) and inc is None else {},
                    pages.requests,
                    inc,
                    lease_token=lease_token,
                )
                if pages.items is None:
                    return await self.recorder.unchanged(
                        ctx, state.item_count if state else 0, True
                    )
                old = await self.recorder.snapshot(source.name, detail=source.detail is not None)
                if seen is not None:
                    return await record_append(self.recorder, ctx, pages, seen, old, baseline)
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
                    outcome = await record_window(
                        self.recorder, ctx, inc, listed, old, self._windows
                    )
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
                    analysis = await asyncio.to_thread(analyse, listed, source, old)
            finally:
                if spooled:
                    await remove_spools([f.spool for f in spooled if f.spool is not None])
            try:
                if first or rebaseline:
                    outcome = await self._baseline(ctx, analysis, old, rebaseline)
                else:
                    outcome = await self._diff(ctx, analysis, old)
                outcome.detail_fetches = details
                return annotated(outcome, ctx)
            finally:
                await asyncio.to_thread(release, [*pages.items, analysis.items])
        except PollError as exc:
            return await self.recorder.failed(source, state, exc, now, started, commit)
        except StaleSnapshot as exc:
            self.recorder.forget(source.name)
            duration = time.monotonic() - started
            return PollOutcome(source.name, False, "error", duration, error=str(exc))

    async def _analyse_apart(
        self, fetched: Fetched, source: SourceConfig, old: SnapshotHashes, keep_all: bool
    ) -> Analysis:
        """A spooled response, analysed in a worker process (bridge.analysis_pool)."""
        assert self.analysis is not None and fetched.spool is not None  # noqa: S101
        planned = await self.analysis.analyse(
            source,
            fetched.spool,
            fetched.content_type,
            fetched.url,
            old.hashes,
            keep_all=keep_all,
            version=old.version,
            step=self.recorder.last_step(source.name, old.version),
        )
        return Analysis(planned.upserts, planned.plan, planned.upserts, planned.item_count)

    async def _baseline(
        self, ctx: PollContext, analysis: Analysis, old: SnapshotHashes, rebaseline: bool
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
        return await self.recorder.record(ctx, len(items), items, deletes, changes, result, old)

    async def _diff(self, ctx: PollContext, analysis: Analysis, old: SnapshotHashes) -> PollOutcome:
        source, state = ctx.source, ctx.state
        missing = await self.recorder.tracked.missing(source.name, old.version)
        confirmation = confirm_missing(missing, analysis.plan.deleted, source.confirm_deletes)
        # an item missing from fewer than confirm_deletes polls in a row keeps its snapshot
        plan = DiffPlan(analysis.plan.created, analysis.plan.updated, confirmation.confirmed)
        if plan.empty and not analysis.upserts and confirmation.pending == missing:
            return await self.recorder.unchanged(ctx, analysis.item_count, False)
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
                return await self.recorder.hold(
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
        if len(upserts) + len(emitted.deleted) > CHANGES_ON_LOOP:
            # a patch per change: 10k of them would hold the loop for ~0.3 s
            changes = await asyncio.to_thread(
                build_changes, emitted, upserts, before, source.ignore_paths
            )
        else:
            changes = build_changes(emitted, upserts, before, source.ignore_paths)
        # only list hashes refreshed (detail fetch): written, but nothing changed
        counted = confirmation.pending != missing
        result = "ok" if changes or plan.deleted or counted else "unchanged"
        outcome = await self.recorder.record(
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
