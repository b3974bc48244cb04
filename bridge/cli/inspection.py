"""The inspection verbs: ``status``, ``events``, ``show``, ``deliveries`` and ``leases``.

They open the state read-only, never create or upgrade it, and are safe beside a running
daemon; each prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any

import orjson

from bridge.cli._common import (
    event_type,
    no_state,
    now_utc,
    require_known,
    since,
    with_store,
)
from bridge.core.extract import key_text
from bridge.core.payload import event_envelope
from bridge.display import ago, compact, dumps, span, stamp, table, until
from bridge.errors import BridgeError
from bridge.models import Event, event_type_name
from bridge.state_view import parse_time, status_doc
from bridge.store import (
    AttemptInfo,
    DeliveryInfo,
    DeliveryQuery,
    EventQuery,
    OwnersReport,
    Store,
    is_shared,
)


def cmd_status(args: argparse.Namespace) -> int:
    async def body(store: Store) -> int:
        now = now_utc()
        runtime = await store.read_runtime()
        sources = await store.list_source_states()
        listeners = await store.list_listener_states()
        tracked = await store.tracked_counts()
        doc = status_doc(store.location, runtime, sources, listeners, now, tracked)
        print(dumps(doc) if args.json else status_text(doc, now))
        return 0

    empty: dict[str, Any] = {"state": None, "daemon": None, "sources": [], "listeners": []}
    return with_store(args, "read", body, no_state(args, empty))


def status_text(doc: dict[str, Any], now: datetime) -> str:
    out = []
    daemon = doc["daemon"]
    # the state knows a listener once the daemon ran with it or a delivery was queued for it
    not_run_yet = (
        " (the daemon has not run on this state; `pollbridge check` lists the configured ones)"
        if daemon is None
        else ""
    )
    if daemon is None:
        out.append("daemon:  no record (it has not run since this state was created)")
    elif daemon["running"]:
        extra = f", metrics {daemon['http']}" if daemon.get("http") else ""
        started = parse_time(daemon["started_at"]) or now
        out.append(
            f"daemon:  running (pid {daemon['pid']}, up {span((now - started).total_seconds())}"
            f", heartbeat {ago(parse_time(daemon['heartbeat_at']), now)}{extra})"
        )
    elif daemon["stopped_at"] and daemon.get("mode") == "once":
        run = daemon.get("last_run") or {}
        what = (
            f": {run.get('polls', 0)} poll(s), {run.get('changes', 0)} change(s), "
            f"{run.get('delivered', 0)} delivered, {run.get('pending', 0)} pending, "
            f"{run.get('failed', 0)} failed"
            if run
            else ""
        )
        out.append(
            f"daemon:  not running (last `run --once` "
            f"{ago(parse_time(daemon['stopped_at']), now)}{what})"
        )
    elif daemon["stopped_at"]:
        out.append(f"daemon:  not running (stopped {ago(parse_time(daemon['stopped_at']), now)})")
    else:
        out.append(
            f"daemon:  NOT RESPONDING (pid {daemon['pid']}, last heartbeat "
            f"{ago(parse_time(daemon['heartbeat_at']), now)}; crashed or killed?)"
        )
    problems = (daemon or {}).get("problems") or []
    if problems:
        out.append(f"health:  UNHEALTHY: {'; '.join(problems)}")
    reload = (daemon or {}).get("last_reload")
    if reload and not reload.get("ok"):
        out.append(f"reload:  FAILED {ago(parse_time(reload['at']), now)}: {reload['error']}")
    out.append(f"state:   {doc['state']}")
    out.append("")
    rows = []
    for s in doc["sources"]:
        state = s["state"]
        if state == "held":
            state = f"held: {s['held_reason']}"
        elif state == "backoff":
            state = (
                f"backoff (next poll {until(parse_time(s['backoff_until']), now)}): "
                f"{s['last_error']}"
            )
        elif state == "failing":
            state = f"failing ({s['consecutive_failures']}x): {s['last_error']}"
        if s["configured"] is False:
            state += " (not configured)"
        if s.get("seen_keys"):
            state += f"; {s['seen_keys']} seen key(s)"
        if s.get("pending_deletes"):
            state += f"; {s['pending_deletes']} delete(s) pending confirmation"
        duration = s["last_duration_s"]
        rows.append(
            [
                s["name"],
                ago(parse_time(s["last_poll_at"]), now),
                s["last_result"],
                None if duration is None else span(duration),
                s["item_count"],
                until(parse_time(s["next_poll_at"]), now),
                state,
            ]
        )
    out.append(
        table(
            ["SOURCE", "LAST POLL", "RESULT", "TOOK", "ITEMS", "NEXT POLL", "STATE"],
            rows,
            max_cell=80,
        )
        if rows
        else "no sources yet" + not_run_yet
    )
    out.extend(
        f"  {s['name']}: cursor {s['cursor']}, last complete list "
        f"{ago(parse_time(s['reconciled_at']), now)}"
        for s in doc["sources"]
        if s.get("cursor") is not None or s.get("reconciled_at") is not None
    )
    out.append("")
    rows = []
    for lst in doc["listeners"]:
        state = lst["state"]
        if lst["paused_reason"]:
            state += f": {lst['paused_reason']}"
        if lst["configured"] is False:
            state += " (not configured)"
        failure = ago(parse_time(lst["last_failure_at"]), now)
        if lst["last_failure_at"] and lst["last_error"]:
            failure += f": {lst['last_error']}"
        rows.append(
            [
                lst["name"],
                lst["pending"],
                lst["in_flight"],
                lst["dead"],
                state,
                ago(parse_time(lst["last_success_at"]), now),
                failure,
            ]
        )
    out.append(
        table(
            ["LISTENER", "PENDING", "IN FLIGHT", "DEAD", "STATE", "LAST SUCCESS", "LAST FAILURE"],
            rows,
            max_cell=70,
        )
        if rows
        else "no listeners yet" + not_run_yet
    )
    return "\n".join(out)


def _event_doc(event: Event, deliveries: Any = None) -> dict[str, Any]:
    doc = event_envelope(event)
    if deliveries is not None:
        doc["deliveries"] = deliveries
    return doc


def cmd_events(args: argparse.Namespace) -> int:
    now = now_utc()
    query = EventQuery(
        source=args.source,
        key=args.key,
        type=event_type(args.type),
        since=since(args.since, now),
        limit=args.limit,
    )

    async def body(store: Store) -> int:
        await require_known(store, args, "source", args.source)
        records = await store.list_events(query)
        if args.json:
            print(dumps([_event_doc(r.event, dict(r.deliveries)) for r in records]))
            return 0
        if not records:
            print("no events match", file=sys.stderr)
            return 0
        rows = [
            [
                stamp(r.event.timestamp),
                r.event.id,
                r.event.source,
                key_text(r.event.key),
                r.event.name or r.event.type,
                " ".join(f"{n}:{st}" for n, st in sorted(r.deliveries.items())) or "(no listener)",
            ]
            for r in records
        ]
        print(table(["TIME", "EVENT", "SOURCE", "KEY", "TYPE", "DELIVERIES"], rows))
        return 0

    return with_store(args, "read", body, no_state(args, [], source=args.source))


def cmd_show(args: argparse.Namespace) -> int:
    async def body(store: Store) -> int:
        event = await store.get_event(args.event_id)
        if event is None:
            raise BridgeError(
                f"no event {args.event_id!r} in {store.location} (pruned, or a typo?)"
            )
        deliveries = await store.list_deliveries(DeliveryQuery(event_id=event.id, limit=1000))
        attempts = {d.id: await store.list_attempts(d.id) for d in deliveries}
        if args.json:
            doc = _event_doc(event)
            doc["deliveries"] = [
                # "attempts" stays the count, as in `deliveries --json`
                {**_delivery_doc(d), "attempt_history": [asdict(a) for a in attempts[d.id]]}
                for d in deliveries
            ]
            print(dumps(doc))
            return 0
        print(_show_text(event, deliveries, attempts, now_utc()))
        return 0

    return with_store(args, "read", body, no_state(args, None))


def _delivery_doc(d: DeliveryInfo) -> dict[str, Any]:
    return asdict(d)


def _show_text(
    event: Event,
    deliveries: list[DeliveryInfo],
    attempts: dict[int, list[AttemptInfo]],
    now: datetime,
) -> str:
    out = [
        f"event    {event.id}",
        f"type     {event_type_name(event.type, event.name)}",
        f"source   {event.source}",
        f"key      {key_text(event.key)}",
        f"detected {stamp(event.timestamp)} ({ago(event.timestamp, now)})",
    ]
    if event.changes and event.type == "updated":
        out.append("changes")
        out.extend(f"  {compact(op)}" for op in event.changes)
    out.append(f"before   {compact(event.before)}")
    out.append(f"after    {compact(event.after)}")
    if not deliveries:
        out.append("\nno deliveries (no listener was routed this event)")
    for d in deliveries:
        line = f"\ndelivery to {d.listener}: {d.state}, {d.attempts} attempt(s)"
        if d.state == "pending" and d.next_at is not None:
            line += f", next attempt {until(d.next_at, now)}"
        elif d.state == "delivered" and d.delivered_at is not None:
            line += f", delivered {ago(d.delivered_at, now)}"
        out.append(line)
        rows = [
            [stamp(a.at), a.status, f"{a.duration_ms:.0f}ms", a.error, a.response]
            for a in attempts.get(d.id, [])
        ]
        if rows:
            out.append(
                "  "
                + table(["TIME", "STATUS", "TOOK", "ERROR", "RESPONSE"], rows).replace("\n", "\n  ")
            )
    return "\n".join(out)


def cmd_deliveries(args: argparse.Namespace) -> int:
    query = DeliveryQuery(
        listener=args.listener,
        state=args.state_filter,
        since=since(args.since, now_utc()),
        limit=args.limit,
    )

    async def body(store: Store) -> int:
        await require_known(store, args, "listener", args.listener)
        rows_in = await store.list_deliveries(query)
        if args.json:
            print(dumps([_delivery_doc(d) for d in rows_in]))
            return 0
        if not rows_in:
            print("no deliveries match", file=sys.stderr)
            return 0
        now = now_utc()
        paused = {s.name for s in await store.list_listener_states() if s.paused}
        rows = []
        for d in rows_in:
            if d.state == "pending" and d.listener in paused:
                when = "listener paused"  # not "due": nothing is sent until it is resumed
            elif d.state == "pending":
                when = until(d.next_at, now)
            else:
                when = ago(d.delivered_at or d.updated_at, now)
            last = d.last_error or (f"HTTP {d.last_status}" if d.last_status else None)
            rows.append(
                [
                    d.event_id,
                    d.listener,
                    d.source,
                    d.key_text,
                    d.type,
                    d.state,
                    d.attempts,
                    when,
                    last,
                ]
            )
        print(
            table(
                ["EVENT", "LISTENER", "SOURCE", "KEY", "TYPE", "STATE", "ATTEMPTS", "WHEN", "LAST"],
                rows,
            )
        )
        return 0

    return with_store(args, "read", body, no_state(args, [], listener=args.listener))


def cmd_leases(args: argparse.Namespace) -> int:
    async def body(store: Store) -> int:
        return print_owners(await store.list_owners(), store.location, args.json)

    def empty(location: str) -> int:
        print(f"pollbridge: no state yet at {location} (no instance has run)", file=sys.stderr)
        return 0

    return with_store(args, "read", body, empty)


def print_owners(report: OwnersReport, location: str, as_json: bool) -> int:
    """The ``leases`` report; ``location`` says which backend the state is."""
    if as_json:
        data = {
            "instances": [
                {
                    "id": i.id,
                    "host": i.host,
                    "pid": i.pid,
                    "alive": i.alive,
                    "started_at": i.started_at.isoformat(),
                    "last_seen": i.last_seen.isoformat(),
                    "sources": list(i.sources),
                    "claimed_deliveries": i.claimed_deliveries,
                }
                for i in report.instances
            ],
            "unowned_sources": report.unowned_sources,
            "leases": [
                {
                    "source": lease.source,
                    "owner": lease.owner,
                    "acquired_at": lease.acquired_at.isoformat(),
                    "expires_at": lease.expires_at.isoformat(),
                }
                for lease in report.leases
            ],
        }
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not report.instances and not report.unowned_sources:
        if is_shared(location):
            print("no instance holds a lease (no instance is running on this state)")
        else:
            print("no instance holds a lease (a SQLite state always has a single instance)")
        return 0
    for i in report.instances:
        state = "alive" if i.alive else "gone"
        print(
            f"{i.id} ({state}, pid {i.pid} on {i.host}, last seen {i.last_seen:%Y-%m-%d %H:%M:%S}Z)"
        )
        print(f"  sources ({len(i.sources)}): {', '.join(i.sources) or '-'}")
        print(f"  claimed deliveries: {i.claimed_deliveries}")
    if report.unowned_sources:
        print(f"unowned (taken at the next tick): {', '.join(report.unowned_sources)}")
    return 0
