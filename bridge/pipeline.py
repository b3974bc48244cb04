"""One poll of one source: fetch, extract, diff, and commit snapshot + events in one transaction."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.config import Config, SourceConfig
from bridge.core.diff import DiffPlan, build_changes, plan_diff
from bridge.core.extract import ExtractionFailed, extract_items
from bridge.core.formats import FormatError, parse_document
from bridge.core.hashing import hash_value
from bridge.core.routing import ListenerRoute, route_change
from bridge.errors import ExtractError, PollError
from bridge.models import Change, Event, Item
from bridge.poller import Fetched, Poller
from bridge.store import PollCommit, SnapshotHashes, StaleSnapshot, Store

log = logging.getLogger("pollbridge.poll")


@dataclass
class PollOutcome:
    """What a poll did, for logs, the CLI and metrics."""

    source: str
    ok: bool
    result: str
    """ok | unchanged | baseline | rebaseline | error"""
    duration_s: float
    item_count: int = 0
    changes: list[Change] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    error: str | None = None
    committed: bool = False


@dataclass(frozen=True)
class _Analysis:
    items: list[Item]
    plan: DiffPlan


def source_fingerprint(source: SourceConfig) -> str:
    """What defines a source's items; when it changes, the next poll re-baselines."""
    return hash_value(source.fingerprint_fields())


def _decode_and_extract(fetched: Fetched, source: SourceConfig) -> list[Item]:
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
    try:
        return extract_items(doc, source.spec)
    except ExtractionFailed as exc:
        raise ExtractError(source.name, str(exc), url=fetched.url) from exc


def _analyse(fetched: Fetched, source: SourceConfig, old: SnapshotHashes) -> _Analysis:
    items = _decode_and_extract(fetched, source)
    return _Analysis(items, plan_diff(old.hashes, items))


class Pipeline:
    """Polls sources and records their changes; shared by the daemon and the CLI."""

    def __init__(
        self,
        config: Config,
        store: Store,
        poller: Poller,
        *,
        clock: Callable[[], datetime],
        on_commit: Callable[[list[Event]], None] | None = None,
    ):
        self.config = config
        self.store = store
        self.poller = poller
        self.clock = clock
        self.on_commit = on_commit
        self._routes: list[ListenerRoute] = config.routes()
        self._hashes: dict[str, SnapshotHashes] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def reconfigure(self, config: Config) -> None:
        """Take a new configuration (reload); cached snapshots stay valid by version."""
        self.config = config
        self._routes = config.routes()

    async def _snapshot(self, source: str) -> SnapshotHashes:
        cached = self._hashes.get(source)
        if cached is not None:
            version = await self.store.snapshot_version(source)
            if version == cached.version:
                return cached
        fresh = await self.store.load_hashes(source)
        self._hashes[source] = fresh
        return fresh

    async def fetch(self, source: SourceConfig, now: datetime) -> Fetched:
        return await self.poller.fetch(
            source.name,
            source.url,
            method=source.method,
            params=source.params,
            headers=source.headers,
            json_body=source.body,
            timeout_s=source.timeout.total_seconds(),
            max_bytes=source.max_bytes,
            now=now,
        )

    async def poll(self, source: SourceConfig, *, commit: bool = True) -> PollOutcome:
        """Poll ``source`` once. With ``commit`` the result is recorded; otherwise a dry run."""
        lock = self._locks.setdefault(source.name, asyncio.Lock())
        async with lock:
            return await self._poll(source, commit)

    async def _poll(self, source: SourceConfig, commit: bool) -> PollOutcome:
        started = time.monotonic()
        now = self.clock()
        try:
            fetched = await self.fetch(source, now)
            state = await self.store.get_source_state(source.name)
            old = await self._snapshot(source.name)
            analysis = await asyncio.to_thread(_analyse, fetched, source, old)
            fingerprint = source_fingerprint(source)
            first = state is None or state.fingerprint is None
            rebaseline = not first and state is not None and state.fingerprint != fingerprint
            if first or rebaseline:
                return await self._baseline(
                    source, analysis, old, now, started, fingerprint, commit, rebaseline
                )
            return await self._diff(source, analysis, old, now, started, fingerprint, commit)
        except PollError as exc:
            duration = time.monotonic() - started
            if commit:
                await self.store.record_poll_failure(source.name, now, duration, exc.cause)
            return PollOutcome(source.name, False, "error", duration, error=str(exc))
        except StaleSnapshot as exc:
            self._hashes.pop(source.name, None)
            duration = time.monotonic() - started
            return PollOutcome(source.name, False, "error", duration, error=str(exc))

    async def _baseline(
        self,
        source: SourceConfig,
        analysis: _Analysis,
        old: SnapshotHashes,
        now: datetime,
        started: float,
        fingerprint: str,
        commit: bool,
        rebaseline: bool,
    ) -> PollOutcome:
        items = analysis.items
        emit = source.baseline == "emit"
        changes = (
            build_changes(DiffPlan([i.key_text for i in items], [], []), items, {}) if emit else []
        )
        result = "rebaseline" if rebaseline else "baseline"
        new_keys = {i.key_text for i in items}
        deletes = [k for k in old.hashes if k not in new_keys]
        return await self._record(
            source, items, items, deletes, changes, now, started, fingerprint, commit, result, old
        )

    async def _diff(
        self,
        source: SourceConfig,
        analysis: _Analysis,
        old: SnapshotHashes,
        now: datetime,
        started: float,
        fingerprint: str,
        commit: bool,
    ) -> PollOutcome:
        plan = analysis.plan
        items = analysis.items
        if plan.empty:
            duration = time.monotonic() - started
            if commit:
                await self.store.record_poll_unchanged(source.name, now, duration)
            return PollOutcome(source.name, True, "unchanged", duration, len(items))
        before = await self.store.load_items(source.name, plan.needs_before)
        changes = build_changes(plan, items, before, source.ignore_paths)
        changed = set(plan.created) | set(plan.updated)
        upserts = [i for i in items if i.key_text in changed]
        return await self._record(
            source,
            items,
            upserts,
            plan.deleted,
            changes,
            now,
            started,
            fingerprint,
            commit,
            "ok",
            old,
        )

    async def _record(
        self,
        source: SourceConfig,
        items: Sequence[Item],
        upserts: Sequence[Item],
        deletes: Sequence[str],
        changes: list[Change],
        now: datetime,
        started: float,
        fingerprint: str,
        commit: bool,
        result: str,
        old: SnapshotHashes,
    ) -> PollOutcome:
        if not commit:
            duration = time.monotonic() - started
            return PollOutcome(source.name, True, result, duration, len(items), changes)
        routes = [route_change(source.name, c, self._routes) for c in changes]
        duration = time.monotonic() - started
        events = await self.store.commit_poll(
            PollCommit(
                source=source.name,
                polled_at=now,
                duration_s=duration,
                upserts=upserts,
                deletes=deletes,
                changes=changes,
                routes=routes,
                item_count=len(items),
                fingerprint=fingerprint,
                result=result,
                expected_version=old.version,
            )
        )
        hashes = dict(old.hashes)
        for k in deletes:
            hashes.pop(k, None)
        for it in upserts:
            hashes[it.key_text] = it.hash
        self._hashes[source.name] = SnapshotHashes(old.version + 1, hashes)
        if events and self.on_commit is not None:
            self.on_commit(events)
        return PollOutcome(
            source.name, True, result, duration, len(items), changes, events, committed=True
        )


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
