"""The state as ``pollbridge status --json`` and the console's overview show it: the daemon's
runtime status read back, every source and every listener. Pure: time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from bridge.models import ListenerState, SourceState
from bridge.store import TrackedCounts

RUNNING_HEARTBEAT_S = 30.0
"""A daemon whose runtime status is older than this is reported as not responding."""


def parse_time(text: Any) -> datetime | None:
    """An RFC 3339 text of a status document as a datetime; None for anything else."""
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def daemon_doc(runtime: Mapping[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    """The ``daemon`` part of ``status --json``: running, responding, pid, version, ..."""
    if runtime is None:
        return None
    heartbeat = parse_time(runtime.get("heartbeat_at"))
    stopped = parse_time(runtime.get("stopped_at"))
    age = None if heartbeat is None else (now - heartbeat).total_seconds()
    running = stopped is None and age is not None and age <= RUNNING_HEARTBEAT_S
    return {
        "running": running,
        "responding": stopped is not None or running,
        "pid": runtime.get("pid"),
        "version": runtime.get("version"),
        "started_at": runtime.get("started_at"),
        "heartbeat_at": runtime.get("heartbeat_at"),
        "stopped_at": runtime.get("stopped_at"),
        "http": runtime.get("http"),
        "config_files": runtime.get("config_files", []),
        "last_reload": runtime.get("last_reload"),
        "mode": runtime.get("mode", "daemon"),
        "last_run": runtime.get("last_run"),
        "problems": runtime.get("problems", []) if running else [],
        "internal_errors": runtime.get("internal_errors", 0),
    }


def next_poll(runtime_source: Mapping[str, Any], now: datetime) -> str | None:
    """The next poll as of ``now``: the runtime status is a few seconds old, so an interval
    source's recorded next poll is moved forward along its grid."""
    moment = parse_time(runtime_source.get("next_poll_at"))
    interval_s = runtime_source.get("interval_s")
    if moment is None:
        return None
    if isinstance(interval_s, int | float) and interval_s > 0 and moment < now:
        skipped = int((now - moment).total_seconds() // interval_s) + 1
        moment += timedelta(seconds=skipped * interval_s)
    return moment.isoformat()


def source_state_name(s: SourceState, now: datetime) -> str:
    """``held``, ``backoff``, ``failing``, ``never polled`` or ``ok``, as ``status`` says."""
    if s.held_reason:
        return "held"
    if s.not_before is not None and s.not_before > now:
        return "backoff"
    if s.consecutive_failures:
        return "failing"
    if s.last_poll_at is None:
        return "never polled"
    return "ok"


def _tracked_fields(tracked: Mapping[str, TrackedCounts] | None, name: str) -> dict[str, Any]:
    counts = None if tracked is None else tracked.get(name, TrackedCounts())
    return {
        "seen_keys": None if counts is None else counts.seen_keys,
        "pending_deletes": None if counts is None else counts.pending_deletes,
    }


def status_doc(
    location: str,
    runtime: Mapping[str, Any] | None,
    sources: Sequence[SourceState],
    listeners: Sequence[ListenerState],
    now: datetime,
    tracked: Mapping[str, TrackedCounts] | None = None,
) -> dict[str, Any]:
    """``pollbridge status --json``: the daemon, every source and every listener.

    ``tracked``: per source, an append source's seen keys and the deletions waiting for
    ``confirm_deletes``."""
    daemon = daemon_doc(runtime, now)
    rt_sources: Mapping[str, Any] = (runtime or {}).get("sources", {})
    rt_listeners: Mapping[str, Any] = (runtime or {}).get("listeners", {})
    live = daemon is not None and daemon["running"]
    by_name = {s.name: s for s in sources}
    source_rows = []
    for name in sorted(set(by_name) | set(rt_sources)):
        s = by_name.get(name) or SourceState(name)
        rt = rt_sources.get(name, {})
        source_rows.append(
            {
                "name": name,
                "configured": None if runtime is None else name in rt_sources,
                "schedule": rt.get("schedule"),
                "state": source_state_name(s, now),
                "last_poll_at": iso(s.last_poll_at),
                "last_result": s.last_result,
                "last_duration_s": s.last_duration_s,
                "last_success_at": iso(s.last_success_at),
                "last_error": s.last_error,
                "item_count": s.item_count,
                "consecutive_failures": s.consecutive_failures,
                "next_poll_at": next_poll(rt, now) if live else None,
                "backoff_until": iso(s.not_before),
                "held_reason": s.held_reason,
                "held_polls": s.held_polls,
                **_tracked_fields(tracked, name),
                "cursor": s.cursor,
                "reconciled_at": iso(s.reconciled_at),
            }
        )
    by_listener = {lst.name: lst for lst in listeners}
    listener_rows = []
    for name in sorted(set(by_listener) | set(rt_listeners)):
        lst = by_listener.get(name) or ListenerState(name)
        rt = rt_listeners.get(name, {})
        state = "paused" if lst.paused else (rt.get("state") if live else None) or "active"
        listener_rows.append(
            {
                "name": name,
                "configured": None if runtime is None else name in rt_listeners,
                "state": state,
                "paused_reason": lst.paused_reason,
                "pending": lst.pending,
                "in_flight": rt.get("in_flight", 0) if live else 0,
                "dead": lst.dead,
                "delivered": lst.delivered,
                "last_success_at": iso(lst.last_success_at),
                "last_failure_at": iso(lst.last_failure_at),
                "last_error": lst.last_error,
            }
        )
    return {"state": location, "daemon": daemon, "sources": source_rows, "listeners": listener_rows}
