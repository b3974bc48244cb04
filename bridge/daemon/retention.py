"""Retention: events and finished deliveries older than ``[bridge] retention`` are deleted."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from bridge.core.durations import format_duration
from bridge.errors import StoreError
from bridge.store import Store

log = logging.getLogger("pollbridge.daemon")


async def prune_history(store: Store, retention: timedelta | None, now: datetime) -> None:
    """Prune once; never raises (a failure is logged and tried again the next day).

    Snapshots and pending deliveries are never touched."""
    if retention is None:
        return
    try:
        result = await store.prune(now - retention)
    except StoreError as exc:
        log.error("retention: pruning failed, trying again tomorrow: %s", exc)
        return
    level = logging.INFO if result.events or result.deliveries else logging.DEBUG
    log.log(
        level,
        "retention: pruned %d event(s), %d finished delivery(ies) and %d attempt(s) older than %s",
        result.events,
        result.deliveries,
        result.attempts,
        format_duration(retention),
    )
