"""What the daemon publishes about itself: the runtime status (for ``status`` and the other
instances), the ``/healthz`` document and the per-listener gauges."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bridge import __version__
from bridge.config import Config
from bridge.daemon.health import Health
from bridge.daemon.polling import RunStats
from bridge.daemon.schedule import Schedule, schedule_text, stale_after_s
from bridge.daemon.status import ListenerRuntime, RuntimeStatus, SourceRuntime
from bridge.dispatcher import Dispatcher
from bridge.errors import StoreError
from bridge.metrics import Metrics
from bridge.store import Store

log = logging.getLogger("pollbridge.daemon")


def listener_states(config: Config, dispatcher: Dispatcher | None) -> dict[str, ListenerRuntime]:
    """Each configured listener's in-flight count, pause and breaker state, now."""
    return {
        lst.name: ListenerRuntime(
            in_flight=0 if dispatcher is None else dispatcher.inflight_for(lst.name),
            paused=dispatcher is not None and lst.name in dispatcher.paused,
            state="active" if dispatcher is None else dispatcher.listener_state(lst.name),
        )
        for lst in config.listeners
    }


def runtime_status(
    config: Config,
    schedule: Schedule,
    dispatcher: Dispatcher | None,
    *,
    now: datetime,
    started_at: datetime,
    stopped: bool,
    http: str | None,
    last_reload: dict[str, Any] | None,
    problems: list[str],
    internal_errors: int,
) -> RuntimeStatus:
    sources = {}
    for s in config.sources:
        next_at = schedule.next_poll_at(s.name)
        sources[s.name] = SourceRuntime(
            schedule=schedule_text(s),
            interval_s=s.interval_s,
            next_poll_at=None if next_at is None or stopped else next_at.isoformat(),
        )
    return RuntimeStatus(
        pid=os.getpid(),
        version=__version__,
        started_at=started_at.isoformat(),
        heartbeat_at=now.isoformat(),
        stopped_at=now.isoformat() if stopped else None,
        config_files=list(config.files),
        http=http,
        sources=sources,
        listeners=listener_states(config, dispatcher),
        last_reload=last_reload,
        problems=[] if stopped else problems,
        internal_errors=internal_errors,
    )


def health_document(
    config: Config,
    health: Health,
    stats: RunStats,
    dispatcher: Dispatcher | None,
    *,
    now: datetime,
    started_at: datetime,
    uptime_s: float,
    scheduler_running: bool,
) -> tuple[bool, dict[str, Any]]:
    """The ``/healthz`` document; healthy when :class:`Health` finds no problem.

    Per-source staleness is reported but does not make the daemon unhealthy: a failing API is
    not cured by restarting pollbridge.
    """
    problems = health.problems()
    sources = {}
    for s in config.sources:
        last = stats.last_success.get(s.name)
        age_s = (now - (last or started_at)).total_seconds()
        outcome = stats.last_outcomes.get(s.name)
        sources[s.name] = {
            "last_success_at": None if last is None else last.isoformat(),
            "age_s": None if last is None else round(age_s, 3),
            "stale_after_s": stale_after_s(s, now),
            "stale": age_s > stale_after_s(s, now),
            "last_result": None if outcome is None else outcome.result,
        }
    listeners = {
        name: {"state": state.state, "in_flight": state.in_flight}
        for name, state in listener_states(config, dispatcher).items()
    }
    store_age = health.store_age_s()
    doc = {
        "status": "unhealthy" if problems else "ok",
        "problems": problems,
        "version": __version__,
        "uptime_s": round(uptime_s, 3),
        "scheduler": "running" if scheduler_running else "stopped",
        "store": {
            "writable": store_age is not None and not any("store" in p for p in problems),
            "last_write_age_s": None if store_age is None else round(store_age, 3),
            "error": health.store_error,
        },
        "sources": sources,
        "listeners": listeners,
    }
    return not problems, doc


async def refresh_listener_gauges(
    metrics: Metrics, store: Store, config: Config, dispatcher: Dispatcher | None
) -> None:
    """Bring the per-listener gauges up to date (before each scrape)."""
    try:
        async with asyncio.timeout(5):
            counts = await store.delivery_counts(["pending", "dead"])
    except (StoreError, TimeoutError) as exc:
        log.warning("metrics: cannot count deliveries: %s", exc)
        return
    states = listener_states(config, dispatcher)
    metrics.set_listener_gauges(
        list(states),
        counts,
        paused=[n for n, st in states.items() if st.paused],
        in_flight={n: st.in_flight for n, st in states.items()},
        breaker_open=[n for n, st in states.items() if st.state == "breaker_open"],
    )


def status_line(
    config: Config,
    stats: RunStats,
    dispatcher: Dispatcher | None,
    counts: Mapping[str, Mapping[str, int]] | None,
    last_reload: dict[str, Any] | None,
) -> str:
    """The one-line STATUS systemd shows: sizes, backlog, failing sources, paused listeners."""
    text = f"{len(config.sources)} source(s), {len(config.listeners)} listener(s)"
    if counts is not None:
        pending = sum(c.get("pending", 0) for c in counts.values())
        dead = sum(c.get("dead", 0) for c in counts.values())
        text += f"; {pending} pending, {dead} dead"
    failing = stats.failing({s.name for s in config.sources})
    if failing:
        text += f"; failing: {', '.join(failing)}"
    paused = sorted(dispatcher.paused) if dispatcher is not None else []
    if paused:
        text += f"; paused: {', '.join(paused)}"
    if last_reload is not None and not last_reload["ok"]:
        text += "; last reload FAILED, previous configuration kept (see the journal)"
    return text
