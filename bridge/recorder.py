"""How a poll's result is written: a commit (snapshot + events), unchanged, held or failed.

Each outcome updates the source's state and backoff in the store; the pipeline decides which
one a poll gets, this records it and keeps the in-memory snapshot hashes in step with the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from bridge.config import Config, SourceConfig
from bridge.core.analysis import SnapshotStep
from bridge.core.retry import MAX_RETRY_AFTER_S, poll_backoff
from bridge.core.routing import ListenerRoute, route_change
from bridge.errors import PollError
from bridge.eventlog import TrackedState
from bridge.http.auth import Authenticators
from bridge.models import Change, Event, Item, SourceState
from bridge.outcome import PollContext, PollOutcome
from bridge.store import PollCommit, SeenUpdate, SnapshotHashes, Store

log = logging.getLogger("pollbridge.poll")

CHANGES_ON_LOOP = 200
"""Up to this many changes are built on the event loop (a thread hand-off costs more)."""
_STEP_MIN = 1000
"""A commit's change is kept (for a worker's copy of the hashes) up to this size, or a quarter
of the snapshot, whichever is more."""


class PollRecorder:
    """Writes what a poll found, and caches each source's snapshot hashes between polls."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        clock: Callable[[], datetime],
        rand: Callable[[], float],
        auth: Authenticators,
        tracked: TrackedState,
        on_commit: Callable[[list[Event]], None] | None,
    ):
        self.config = config
        self.store = store
        self.clock = clock
        self.rand = rand
        self.auth = auth
        self.tracked = tracked
        self.on_commit = on_commit
        self._routes: list[ListenerRoute] = config.routes()
        self._hashes: dict[str, SnapshotHashes] = {}
        self._steps: dict[str, SnapshotStep] = {}
        """Per source, the change its last commit made to the cached hashes (a worker that
        holds the version before it is sent only this)."""

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self._routes = config.routes()

    async def snapshot(self, source: str, *, detail: bool = False) -> SnapshotHashes:
        """The source's stored hashes (and list hashes for a detail source), cached by version."""
        cached = self._hashes.get(source)
        if cached is not None and (cached.list_hashes is not None or not detail):
            version = await self.store.snapshot_version(source)
            if version == cached.version:
                return cached
        fresh = await self.store.load_hashes(source, list_hashes=detail)
        self._hashes[source] = fresh
        self._steps.pop(source, None)
        return fresh

    def last_step(self, source: str, version: int) -> SnapshotStep | None:
        """The change that made ``version`` of the cached hashes of ``source``, if this
        process made it (its commit, applied to the version before)."""
        step = self._steps.get(source)
        cached = self._hashes.get(source)
        if step is None or cached is None or cached.version != version:
            return None
        return step if step.from_version == version - 1 else None

    def forget(self, source: str) -> None:
        """Drop what is cached for ``source`` (its state moved under this process)."""
        self._hashes.pop(source, None)
        self._steps.pop(source, None)
        self.tracked.forget(source)

    async def _route(
        self, source: str, changes: Sequence[Change], now: datetime
    ) -> list[list[str]]:
        """Each change's listeners; ``match`` filters (JSONPath, ~0.1 ms each) and many changes
        are routed off the loop."""
        routes = self._routes

        def route_all() -> list[list[str]]:
            return [route_change(source, c, routes, now) for c in changes]

        filtered = any(r.match is not None for r in routes)
        if (filtered and len(changes) > 10) or len(changes) > CHANGES_ON_LOOP:
            return await asyncio.to_thread(route_all)
        return route_all()

    async def failed(
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

    async def unchanged(self, ctx: PollContext, item_count: int, not_modified: bool) -> PollOutcome:
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

    async def hold(
        self,
        ctx: PollContext,
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

    async def record(
        self,
        ctx: PollContext,
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
                lease_token=ctx.lease_token,
                seen=seen,
                missing=missing,
                cursor=ctx.cursor,
                reconciled_at=ctx.reconciled_at,
            )
        )
        self.tracked.committed(source.name, old.version + 1, ctx.now, seen, missing)
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
        if len(deletes) + len(upserts) <= max(_STEP_MIN, len(hashes) // 4):
            self._steps[source.name] = SnapshotStep(
                old.version, tuple(deletes), tuple((it.key_text, it.hash) for it in upserts)
            )
        else:  # a baseline, or most of the list: sending it all costs the same, and no copy
            self._steps.pop(source.name, None)
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
