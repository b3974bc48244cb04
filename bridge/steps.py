"""The pipeline's steps for the source modes that do not diff a whole list: an incremental
source's window of changes (:mod:`bridge.incremental`) and an append-only event log
(:mod:`bridge.eventlog`). Each analyses off the event loop and records through the recorder."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from bridge.core.diff import build_changes
from bridge.eventlog import Baseline, analyse_append
from bridge.http.pages import Pages
from bridge.incremental import IncrementalPoll, WindowSizes
from bridge.models import Item
from bridge.outcome import PollContext, PollOutcome, annotated
from bridge.recorder import PollRecorder
from bridge.store import SeenKeys, SnapshotHashes

log = logging.getLogger("pollbridge.poll")


async def record_append(
    recorder: PollRecorder,
    ctx: PollContext,
    pages: Pages,
    seen: SeenKeys,
    old: SnapshotHashes,
    baseline: Baseline,
) -> PollOutcome:
    """New entries of an event log become events; the keys it remembers are added and pruned."""
    step = await asyncio.to_thread(analyse_append, ctx, pages.items, seen, baseline, old)
    if baseline is None and not step.changes and not step.seen.forget:
        outcome = await recorder.unchanged(ctx, len(step.entries), False)
    else:  # an append source keeps keys, not items: a snapshot from another mode goes
        deletes, result = list(old.hashes), step.result
        outcome = await recorder.record(
            ctx, len(step.entries), (), deletes, step.changes, result, old, seen=step.seen
        )
    outcome.remembered, outcome.stopped = step.remembered, pages.stopped
    return outcome


async def record_window(
    recorder: PollRecorder,
    ctx: PollContext,
    inc: IncrementalPoll,
    pages: list[list[Item]],
    old: SnapshotHashes,
    windows: WindowSizes,
) -> PollOutcome:
    """A window of changes: what it returned is compared by key and hash; nothing absent
    from it is deleted (only what ``deleted_when`` selects)."""
    source = ctx.source
    found = await asyncio.to_thread(inc.analyse, source, pages, old.hashes, windows)
    ctx = replace(ctx, cursor=found.cursor, reconciled_at=inc.reconciled_at)
    if found.plan.empty:
        outcome = await recorder.unchanged(ctx, found.item_count, False)
    else:
        before = await recorder.store.load_items(source.name, found.emitted.needs_before)
        changes = build_changes(found.emitted, found.upserts, before, source.ignore_paths)
        outcome = await recorder.record(
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
    return annotated(outcome, ctx)
