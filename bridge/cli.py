"""The ``pollbridge`` command: errors become one clear paragraph and a distinct exit code."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from bridge import __version__
from bridge._render import ago, compact, dumps, span, stamp, table, until
from bridge.config import Config, iter_summary, load_config, locate_state
from bridge.core.durations import parse_duration
from bridge.core.extract import key_text
from bridge.core.payload import event_envelope
from bridge.core.signing import decode_secret
from bridge.errors import BridgeError, ConfigError, NoStateError, StoreError
from bridge.models import CHANGE_TYPES, Event, ListenerState, SourceState
from bridge.store import (
    Access,
    AttemptInfo,
    DeliveryInfo,
    DeliveryQuery,
    EventQuery,
    OwnersReport,
    ReplayRequest,
    Store,
    backend_of,
    create_store,
    is_state_file,
)

if TYPE_CHECKING:
    from bridge.pipeline import PollOutcome

EX_USAGE = 64
EX_IOERR = 74
EX_CONFIG = 78


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


# -- verbs ------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    for line in iter_summary(config):
        print(line)
    print("configuration OK")
    return 0


def cmd_poll(args: argparse.Namespace) -> int:
    from bridge.logs import configure_logging

    config = _config(args)
    configure_logging("warning", config.redact)
    source = config.source(args.name)
    return asyncio.run(_poll(config, source, args.commit))


async def _open_for_dry_run(location: str, scratch: Path) -> Store:
    """The state, read-only; with no state yet, an empty one in ``scratch``: a dry run must
    not create a state file (nor change one the daemon is using)."""
    store = create_store(location, access="read")
    try:
        await store.open()
    except NoStateError:
        store = create_store(str(scratch / "dry-run.db"))
        await store.open()
    return store


async def _poll_with(config: Config, source: Any, commit: bool, store: Store) -> PollOutcome:
    from bridge.runtime import Services

    services = Services(config, store, deliver=False)
    try:
        return await services.pipeline.poll(source, commit=commit)
    finally:
        await services.aclose()
        await store.close()


async def _poll(config: Config, source: Any, commit: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="pollbridge-dry-run-") as scratch:
        if commit:
            store = create_store(config.state_location)
            await store.open()
        else:
            store = await _open_for_dry_run(config.state_location, Path(scratch))
        outcome = await _poll_with(config, source, commit, store)
    if not outcome.ok:
        print(f"pollbridge: {config.redact(outcome.error or 'poll failed')}", file=sys.stderr)
        return 1
    for change in outcome.changes:
        line = {
            "type": change.type,
            "key": change.key if isinstance(change.key, str) else list(change.key),
            "before": change.before,
            "after": change.after,
            "changes": change.changes,
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
    verb = "recorded" if commit else "would record"
    if outcome.result == "held":
        print(
            f"{source.name}: held: {outcome.held}; no events, snapshot unchanged "
            f"({outcome.held_polls} of {source.confirm_polls} confirmations"
            + ("" if commit else ", dry run")
            + f"; `pollbridge accept {source.name}` applies it at the next poll)",
            file=sys.stderr,
        )
        return 0
    if outcome.result in ("baseline", "rebaseline"):
        key = outcome.result  # the setting that decides: baseline, or rebaseline
        mode = source.baseline if key == "baseline" else source.rebaseline
        how = "with a created event each" if mode == "emit" else f'silently ({key} = "silent")'
        why = (
            "no snapshot yet"
            if key == "baseline"
            else "what defines its items changed (url, params, body, items, key, ignore, "
            "fields, format or paginate)"
        )
        print(
            f"{source.name}: {why}; the {key} {verb} {outcome.item_count} item(s) {how}",
            file=sys.stderr,
        )
    else:
        print(
            f"{source.name}: {outcome.item_count} item(s), {len(outcome.changes)} change(s) "
            f"{'recorded' if commit else '(dry run: nothing recorded; add --commit to record)'}",
            file=sys.stderr,
        )
    if commit and outcome.events:
        from bridge.core.routing import route_change

        routes = config.routes()
        queued = sum(
            len(route_change(source.name, change, routes, event.timestamp))
            for change, event in zip(outcome.changes, outcome.events, strict=False)
        )
        print(
            f"{len(outcome.events)} event(s) recorded, {queued} delivery(ies) queued"
            + ("" if queued else " (no listener takes them)"),
            file=sys.stderr,
        )
    return 0


def cmd_accept(args: argparse.Namespace) -> int:
    config = _config(args)
    source = config.source(args.name)
    return asyncio.run(_accept(config, source.name))


async def _accept(config: Config, name: str) -> int:
    from bridge.store import create_store

    store = create_store(config.state_location, access="write")
    try:
        await store.open()
    except NoStateError:
        print(f"{name}: not held; nothing to accept (no state yet)", file=sys.stderr)
        return 0
    try:
        state = await store.get_source_state(name)
        if state is None or not state.held_reason:
            print(f"{name}: not held; nothing to accept", file=sys.stderr)
            return 0
        await store.update_source_state(name, accept_requested=True)
    finally:
        await store.close()
    print(
        f"{name}: the held result ({state.held_reason}) will be applied at its next poll",
        file=sys.stderr,
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bridge.daemon import Daemon
    from bridge.logs import configure_logging

    config = _config(args)
    override = "debug" if args.debug else None
    daemon = Daemon(config, log_level_override=override)
    configure_logging(override or config.bridge.log_level, daemon.redact, config.bridge.log_format)
    return asyncio.run(daemon.run_once() if args.once else daemon.run())


def cmd_migrate_state(args: argparse.Namespace) -> int:
    from pathlib import Path

    if backend_of(args.to) != "postgres":
        print(f"pollbridge: --to must be a postgresql:// URL, got {args.to!r}", file=sys.stderr)
        return EX_USAGE
    path = Path(args.from_)
    if not path.is_file():
        raise StoreError("migrate-state", "no such SQLite state file", location=str(path))
    return asyncio.run(_migrate_state(path, args.to))


async def _migrate_state(path: Any, url: str) -> int:
    from bridge.store import claim_state_lock as claim_sqlite_state
    from bridge.store.postgres import PostgresStore
    from bridge.store.sqlite import SQLiteStore

    # a daemon still running on the file would go on committing polls that are not copied
    lock = claim_sqlite_state(str(path))
    try:
        lite = SQLiteStore(path)
        lite.open_sync()  # brings an older state file to the current schema first, as `run` would
        target = PostgresStore(url)
        try:
            await target.open()
            counts = await target.import_sqlite(lite.conn)
        finally:
            lite.close_sync()
            await target.close()
    finally:
        if lock is not None:
            os.close(lock)
    copied = ", ".join(f"{n} {table}" for table, n in counts.items())
    print(f"copied {path} into {target.location}: {copied}")
    print("now set [bridge] state to that URL and start the instances (docs/scaling.md)")
    return 0


def cmd_leases(args: argparse.Namespace) -> int:
    async def body(store: Store) -> int:
        return _print_owners(await store.list_owners(), args.json)

    def empty(location: str) -> int:
        print(f"pollbridge: no state yet at {location} (no instance has run)", file=sys.stderr)
        return 0

    return _with_store(args, "read", body, empty)


def _print_owners(report: OwnersReport, as_json: bool) -> int:
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
        }
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not report.instances and not report.unowned_sources:
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


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo
    from bridge.logs import configure_logging

    configure_logging("warning")
    try:
        duration = None if args.duration is None else parse_duration(args.duration).total_seconds()
    except ValueError as exc:
        raise UsageError(f"--duration: {exc}") from None
    try:
        return run_demo(duration)
    except KeyboardInterrupt:
        return 0


def cmd_secret(args: argparse.Namespace) -> int:
    from bridge.core.signing import generate_key_pair, generate_secret

    if args.asymmetric:
        signing_key, public_key = generate_key_pair()
        print(f'signing_key = "{signing_key}"  # the listener\'s config: keep it secret')
        print(f'public_key = "{public_key}"  # give this to the receiver: it verifies v1a')
        return 0
    print(generate_secret(args.bytes))
    return 0


# -- inspecting and steering the state (safe beside a running daemon) ----------------------

RUNNING_HEARTBEAT_S = 30.0
"""A daemon whose runtime status is older than this is reported as not responding."""


def _now() -> datetime:
    return datetime.now(UTC)


def _state_location(args: argparse.Namespace) -> str:
    if getattr(args, "state", None):
        if not is_state_file(args.state):
            return str(args.state)
        return str(Path(args.state).expanduser().absolute())
    return locate_state(args.config)


def _since(text: str | None, now: datetime) -> datetime | None:
    """``--since 1h`` (a duration back from now) or an RFC 3339 time."""
    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r}: expected a duration (30m, 1h, 2d) or a time (2026-11-23T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _with_store(
    args: argparse.Namespace,
    access: Access,
    body: Callable[[Store], Awaitable[int]],
    empty: Callable[[str], int],
) -> int:
    """Open the state read-only (or read-write without creating or migrating) and run ``body``;
    with no state yet, ``empty(location)`` answers instead."""
    location = _state_location(args)

    async def go() -> int:
        store = create_store(location, access=access)
        try:
            await store.open()
        except NoStateError:
            return empty(location)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _no_state(args: argparse.Namespace, json_empty: Any) -> Callable[[str], int]:
    def answer(location: str) -> int:
        print(f"pollbridge: no state yet at {location} (the daemon has not run)", file=sys.stderr)
        if getattr(args, "json", False):
            print(dumps(json_empty))
        return 0

    return answer


def _daemon_view(runtime: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    if runtime is None:
        return None
    heartbeat = _parse_time(runtime.get("heartbeat_at"))
    stopped = _parse_time(runtime.get("stopped_at"))
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
        "problems": runtime.get("problems", []) if running else [],
        "internal_errors": runtime.get("internal_errors", 0),
    }


def _next_poll(runtime_source: dict[str, Any], now: datetime) -> str | None:
    """The next poll as of ``now``: the runtime status is a few seconds old, so an interval
    source's recorded next poll is moved forward along its grid."""
    moment = _parse_time(runtime_source.get("next_poll_at"))
    interval_s = runtime_source.get("interval_s")
    if moment is None:
        return None
    if isinstance(interval_s, int | float) and interval_s > 0 and moment < now:
        skipped = int((now - moment).total_seconds() // interval_s) + 1
        moment += timedelta(seconds=skipped * interval_s)
    return moment.isoformat()


def _parse_time(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def cmd_status(args: argparse.Namespace) -> int:
    async def body(store: Store) -> int:
        now = _now()
        runtime = await store.read_runtime()
        sources = await store.list_source_states()
        listeners = await store.list_listener_states()
        doc = _status_doc(store.location, runtime, sources, listeners, now)
        print(dumps(doc) if args.json else _status_text(doc, now))
        return 0

    empty: dict[str, Any] = {"state": None, "daemon": None, "sources": [], "listeners": []}
    return _with_store(args, "read", body, _no_state(args, empty))


def _status_doc(
    location: str,
    runtime: dict[str, Any] | None,
    sources: list[SourceState],
    listeners: list[ListenerState],
    now: datetime,
) -> dict[str, Any]:
    daemon = _daemon_view(runtime, now)
    rt_sources: dict[str, Any] = (runtime or {}).get("sources", {})
    rt_listeners: dict[str, Any] = (runtime or {}).get("listeners", {})
    live = daemon is not None and daemon["running"]
    by_name = {s.name: s for s in sources}
    source_rows = []
    for name in sorted(set(by_name) | set(rt_sources)):
        s = by_name.get(name) or SourceState(name)
        rt = rt_sources.get(name, {})
        if s.held_reason:
            state = "held"
        elif s.not_before is not None and s.not_before > now:
            state = "backoff"
        elif s.consecutive_failures:
            state = "failing"
        elif s.last_poll_at is None:
            state = "never polled"
        else:
            state = "ok"
        source_rows.append(
            {
                "name": name,
                "configured": None if runtime is None else name in rt_sources,
                "schedule": rt.get("schedule"),
                "state": state,
                "last_poll_at": _iso(s.last_poll_at),
                "last_result": s.last_result,
                "last_duration_s": s.last_duration_s,
                "last_success_at": _iso(s.last_success_at),
                "last_error": s.last_error,
                "item_count": s.item_count,
                "consecutive_failures": s.consecutive_failures,
                "next_poll_at": _next_poll(rt, now) if live else None,
                "backoff_until": _iso(s.not_before),
                "held_reason": s.held_reason,
                "held_polls": s.held_polls,
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
                "last_success_at": _iso(lst.last_success_at),
                "last_failure_at": _iso(lst.last_failure_at),
                "last_error": lst.last_error,
            }
        )
    return {"state": location, "daemon": daemon, "sources": source_rows, "listeners": listener_rows}


def _status_text(doc: dict[str, Any], now: datetime) -> str:
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
        started = _parse_time(daemon["started_at"]) or now
        out.append(
            f"daemon:  running (pid {daemon['pid']}, up {span((now - started).total_seconds())}"
            f", heartbeat {ago(_parse_time(daemon['heartbeat_at']), now)}{extra})"
        )
    elif daemon["stopped_at"]:
        out.append(f"daemon:  not running (stopped {ago(_parse_time(daemon['stopped_at']), now)})")
    else:
        out.append(
            f"daemon:  NOT RESPONDING (pid {daemon['pid']}, last heartbeat "
            f"{ago(_parse_time(daemon['heartbeat_at']), now)}; crashed or killed?)"
        )
    problems = (daemon or {}).get("problems") or []
    if problems:
        out.append(f"health:  UNHEALTHY: {'; '.join(problems)}")
    reload = (daemon or {}).get("last_reload")
    if reload and not reload.get("ok"):
        out.append(f"reload:  FAILED {ago(_parse_time(reload['at']), now)}: {reload['error']}")
    out.append(f"state:   {doc['state']}")
    out.append("")
    rows = []
    for s in doc["sources"]:
        state = s["state"]
        if state == "held":
            state = f"held: {s['held_reason']}"
        elif state == "backoff":
            state = (
                f"backoff (next poll {until(_parse_time(s['backoff_until']), now)}): "
                f"{s['last_error']}"
            )
        elif state == "failing":
            state = f"failing ({s['consecutive_failures']}x): {s['last_error']}"
        if s["configured"] is False:
            state += " (not configured)"
        duration = s["last_duration_s"]
        rows.append(
            [
                s["name"],
                ago(_parse_time(s["last_poll_at"]), now),
                s["last_result"],
                None if duration is None else span(duration),
                s["item_count"],
                until(_parse_time(s["next_poll_at"]), now),
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
    out.append("")
    rows = []
    for lst in doc["listeners"]:
        state = lst["state"]
        if lst["paused_reason"]:
            state += f": {lst['paused_reason']}"
        if lst["configured"] is False:
            state += " (not configured)"
        failure = ago(_parse_time(lst["last_failure_at"]), now)
        if lst["last_failure_at"] and lst["last_error"]:
            failure += f": {lst['last_error']}"
        rows.append(
            [
                lst["name"],
                lst["pending"],
                lst["in_flight"],
                lst["dead"],
                state,
                ago(_parse_time(lst["last_success_at"]), now),
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


def _event_type(text: str | None) -> str | None:
    if text is None:
        return None
    value = text.removeprefix("item.")
    if value not in CHANGE_TYPES:
        raise UsageError(f"--type {text!r}: expected one of {', '.join(CHANGE_TYPES)}")
    return value


def cmd_events(args: argparse.Namespace) -> int:
    now = _now()
    query = EventQuery(
        source=args.source,
        key=args.key,
        type=_event_type(args.type),
        since=_since(args.since, now),
        limit=args.limit,
    )

    async def body(store: Store) -> int:
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
                r.event.type,
                " ".join(f"{n}:{st}" for n, st in sorted(r.deliveries.items())) or "(no listener)",
            ]
            for r in records
        ]
        print(table(["TIME", "EVENT", "SOURCE", "KEY", "TYPE", "DELIVERIES"], rows))
        return 0

    return _with_store(args, "read", body, _no_state(args, []))


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
        print(_show_text(event, deliveries, attempts, _now()))
        return 0

    return _with_store(args, "read", body, _no_state(args, None))


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
        f"type     item.{event.type}",
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
        since=_since(args.since, _now()),
        limit=args.limit,
    )

    async def body(store: Store) -> int:
        rows_in = await store.list_deliveries(query)
        if args.json:
            print(dumps([_delivery_doc(d) for d in rows_in]))
            return 0
        if not rows_in:
            print("no deliveries match", file=sys.stderr)
            return 0
        now = _now()
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

    return _with_store(args, "read", body, _no_state(args, []))


def cmd_replay(args: argparse.Namespace) -> int:
    if bool(args.event_ids) == bool(args.dead):
        raise UsageError("give event ids, or --dead (not both)")
    if args.since and not args.dead:
        raise UsageError("--since goes with --dead")
    now = _now()
    request = ReplayRequest(
        event_ids=tuple(args.event_ids),
        dead=args.dead,
        listener=args.listener,
        since=_since(args.since, now),
    )

    async def body(store: Store) -> int:
        result = await store.replay(request, now)
        if args.json:
            print(
                dumps(
                    {
                        "requeued": result.requeued,
                        "unknown_event_ids": list(result.unknown_event_ids),
                    }
                )
            )
        elif result.requeued:
            print(
                f"queued {result.requeued} delivery(ies) again (same event ids, fresh retry "
                f"schedule); {await _who_sends(store, 'within a few seconds')}"
            )
        else:
            print("nothing to replay", file=sys.stderr)
        if result.unknown_event_ids:
            print(
                f"pollbridge: unknown event id(s): {', '.join(result.unknown_event_ids)}",
                file=sys.stderr,
            )
            return 1
        return 0

    def empty(location: str) -> int:
        print(f"pollbridge: no state yet at {location}: nothing to replay", file=sys.stderr)
        return 1 if args.event_ids else 0

    return _with_store(args, "write", body, empty)


async def _who_sends(store: Store, how_soon: str) -> str:
    """Who will send what an operator just queued: the running daemon, or nobody yet."""
    daemon = _daemon_view(await store.read_runtime(), _now())
    if daemon is not None and daemon["running"]:
        return f"a running daemon sends them {how_soon}"
    return "no daemon is running on this state: `pollbridge run` sends them when it starts"


def cmd_resume(args: argparse.Namespace) -> int:
    async def body(store: Store) -> int:
        states = {s.name: s for s in await store.list_listener_states()}
        runtime = await store.read_runtime() or {}
        state = states.get(args.listener)
        if state is None and args.listener not in runtime.get("listeners", {}):
            known = sorted(set(states) | set(runtime.get("listeners", {})))
            raise BridgeError(
                f"no listener named {args.listener!r} in the state "
                f"(known: {', '.join(known) or 'none'})"
            )
        if state is None or not state.paused:
            print(f"{args.listener}: was not paused")
            return 0
        await store.set_listener_paused(args.listener, False, None, _now())
        print(
            f"{args.listener}: resumed (was paused: {state.paused_reason or 'no reason recorded'})"
        )
        print(
            f"{args.listener}: {state.pending} delivery(ies) pending; "
            f"{await _who_sends(store, 'within seconds')}"
        )
        return 0

    def empty(location: str) -> int:
        print(f"pollbridge: no state yet at {location}: nothing to resume", file=sys.stderr)
        return 1

    return _with_store(args, "write", body, empty)


def cmd_listen(args: argparse.Namespace) -> int:
    from bridge.receiver import make_server

    if args.secret:
        try:
            decode_secret(args.secret)
        except ValueError as exc:
            raise UsageError(f"--secret: {exc}") from None
    try:
        server = make_server(
            args.host,
            args.port,
            secret=args.secret,
            status=args.status,
            out=sys.stdout,
            as_json=args.json,
        )
    except OSError as exc:
        raise BridgeError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from exc
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(
        f"listening on http://{host}:{port}/ (answering {args.status}; "
        f"signatures {'checked' if args.secret else 'NOT checked: give --secret whsec_…'}); "
        "Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from bridge.starter import write_starter

    path = Path(args.path)
    try:
        write_starter(path, force=args.force)
    except FileExistsError:
        raise BridgeError(f"{path} exists; give --force to overwrite it") from None
    except OSError as exc:
        raise BridgeError(f"cannot write {path}: {exc.strerror or exc}") from exc
    print(f"wrote {path} (mode 0600: it holds a webhook secret)")
    print(f"next: edit its [[sources]], then run: pollbridge check --config {path}")
    return 0


# -- plumbing ---------------------------------------------------------------------------------


class UsageError(BridgeError):
    """The command line asks for something impossible (exit 64)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a wrong command line exits 64 (EX_USAGE) like pollbridge's own checks."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _int_between(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            expected = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pollbridge",
        description="Poll REST APIs, detect created/updated/deleted items, send signed webhooks.",
    )
    parser.add_argument("--version", action="version", version=f"pollbridge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=fn)
        p.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        return p

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            "-c",
            metavar="PATH",
            help="configuration file (default: $POLLBRIDGE_CONFIG, else /etc/pollbridge/pollbridge.toml)",
        )

    p = add("check", cmd_check, "validate the configuration and print a summary")
    config_arg(p)
    p = add("poll", cmd_poll, "poll one source now and print its changes as JSON lines")
    p.add_argument("name", help="the source's name")
    p.add_argument("--commit", action="store_true", help="record the poll as the daemon would")
    config_arg(p)
    p = add(
        "accept",
        cmd_accept,
        "apply a held poll (one that would delete too much) at the source's next poll",
    )
    p.add_argument("name", help="the held source's name")
    config_arg(p)
    p = add("run", cmd_run, "run the daemon: poll on schedule, deliver webhooks")
    p.add_argument(
        "--once",
        action="store_true",
        help="poll every source once, deliver what is due, exit (1: a poll failed, 75: deliveries pending)",
    )
    config_arg(p)
    p = add(
        "migrate-state",
        cmd_migrate_state,
        "copy a SQLite state (snapshots, events, deliveries) into an empty PostgreSQL database",
    )
    p.add_argument("--from", dest="from_", required=True, metavar="PATH", help="the SQLite file")
    p.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host/db")

    def state_args(p: argparse.ArgumentParser, json_help: str = "print JSON for scripts") -> None:
        config_arg(p)
        p.add_argument(
            "--state-file",
            dest="state",
            metavar="PATH",
            help="the state file (default: [bridge] state of the configuration)",
        )
        p.add_argument("--json", action="store_true", help=json_help)

    p = add("leases", cmd_leases, "show which instance polls which source (PostgreSQL state)")
    state_args(p)
    p = add("demo", cmd_demo, "offline demo: example API -> pollbridge -> verifying receiver")
    p.add_argument(
        "--duration", metavar="DURATION", help="stop after e.g. 30s (default: until Ctrl-C)"
    )
    p = add("secret", cmd_secret, "print a fresh Standard Webhooks secret (whsec_...)")
    p.add_argument(
        "--bytes", type=_int_between(24, 64), default=32, metavar="N", help="24-64 (default 32)"
    )
    p.add_argument(
        "--asymmetric",
        action="store_true",
        help="print an ed25519 key pair instead: signing_key (whsk_...) and public key (whpk_...)",
    )

    p = add("status", cmd_status, "what every source and listener is doing (safe while running)")
    state_args(p)
    p = add("events", cmd_events, "list recorded events, newest last")
    p.add_argument("--source", metavar="S", help="only this source")
    p.add_argument(
        "--key", metavar="K", help="only this item key (a JSON array for a composite key)"
    )
    p.add_argument("--type", metavar="T", help="created, updated or deleted")
    p.add_argument("--since", metavar="WHEN", help="e.g. 1h, 2d, or 2026-11-23T12:00:00Z")
    p.add_argument(
        "--limit", type=_int_between(1), default=50, metavar="N", help="at most N (default 50)"
    )
    state_args(p)
    p = add("show", cmd_show, "one event with every delivery attempt")
    p.add_argument("event_id", metavar="EVENT_ID")
    state_args(p)
    p = add("deliveries", cmd_deliveries, "list deliveries, newest last")
    p.add_argument("--listener", metavar="L", help="only this listener")
    p.add_argument(
        "--state",
        dest="state_filter",
        choices=["pending", "dead", "delivered", "coalesced"],
        help="only deliveries in this state (coalesced: merged by coalesce = true)",
    )
    p.add_argument("--since", metavar="WHEN", help="changed since, e.g. 1h or 2d")
    p.add_argument(
        "--limit", type=_int_between(1), default=50, metavar="N", help="at most N (default 50)"
    )
    state_args(p)
    p = add("replay", cmd_replay, "queue deliveries again (same event ids, so receivers dedupe)")
    p.add_argument("event_ids", nargs="*", metavar="EVENT_ID")
    p.add_argument("--dead", action="store_true", help="every dead delivery")
    p.add_argument("--listener", metavar="L", help="only deliveries to this listener")
    p.add_argument("--since", metavar="WHEN", help="with --dead: died since, e.g. 1d")
    state_args(p)
    p = add("resume", cmd_resume, "resume a paused or disabled listener; nothing queued is lost")
    p.add_argument("listener", metavar="LISTENER", help="the listener's name")
    state_args(p)
    p = add("listen", cmd_listen, "a local webhook receiver printing what arrives (debugging)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=_int_between(0, 65535),
        default=8787,
        help="port (default 8787; 0 picks one)",
    )
    p.add_argument("--secret", metavar="whsec_…", help="verify signatures with this secret")
    p.add_argument(
        "--status",
        type=_int_between(200, 599),
        default=204,
        metavar="CODE",
        help="answer with this HTTP status (default 204)",
    )
    p.add_argument("--json", action="store_true", help="one JSON line per webhook")
    p = add("init", cmd_init, "write a commented starter configuration")
    p.add_argument(
        "path",
        nargs="?",
        default="pollbridge.toml",
        metavar="PATH",
        help="where to write it (default pollbridge.toml)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def _explain(exc: BaseException, config: Config | None) -> str:
    text = str(exc)
    if config is not None:
        text = config.redact(text)
    return text


def _access_hint(exc: StoreError) -> str:
    """Why SQLite's "unable to open database file" happened, when it is file permissions: the
    state of a systemd service (DynamicUser) belongs to a user the operator's shell is not."""
    if not exc.location or not is_state_file(exc.location):
        return ""
    path = Path(exc.location)
    blocked = next(
        (
            p
            for p in (path, path.parent)
            if p.exists() and not os.access(p, os.R_OK | os.W_OK if p.is_dir() else os.R_OK)
        ),
        None,
    )
    if blocked is None:
        return ""
    return (
        f"\n(this user may not {'read' if blocked == path else 'write in'} {blocked}; "
        "run the command as the state's owner, e.g. with sudo)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    debug = bool(getattr(args, "debug", False)) or os.environ.get("POLLBRIDGE_DEBUG") == "1"
    args.debug = debug
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"pollbridge {args.verb}: {exc}", file=sys.stderr)
        return EX_USAGE
    except ConfigError as exc:
        print(f"pollbridge: configuration error: {exc}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return EX_CONFIG
    except StoreError as exc:
        print(f"pollbridge: {exc}{_access_hint(exc)}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return EX_IOERR
    except BridgeError as exc:
        print(f"pollbridge: {_explain(exc, None)}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(
            f"pollbridge: unexpected error: {type(exc).__name__}: {exc}\n"
            "(run with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        if debug:
            traceback.print_exc()
        return 1
