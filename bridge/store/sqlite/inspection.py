"""The SQLite store's inspection, operator actions, runtime records and (trivial) coordination.

Inspection reads go through sqlite-utils' ``query`` where a row per dict is all they need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from bridge.models import Event, ListenerState
from bridge.store._rows import (
    Filter,
    delivery_filters,
    delivery_info_from_row,
    dumps,
    event_filters,
    listener_states,
)
from bridge.store.base import (
    AttemptInfo,
    DeliveryInfo,
    DeliveryQuery,
    EventQuery,
    EventRecord,
    Heartbeat,
    InstanceInfo,
    OwnersReport,
    PruneResult,
    ReplayRequest,
    ReplayResult,
    TrackedCounts,
)
from bridge.store.sqlite._base import SQLiteBase, iso, parse_iso, row_to_event
from bridge.store.sqlite.schema import STATE_INDEX


class SQLiteInspection(SQLiteBase):
    """Inspection, operations and coordination; one process owns a SQLite file, so it always
    owns every lease."""

    async def set_listener_paused(
        self, listener: str, paused: bool, reason: str | None, at: datetime
    ) -> None:
        await self._run(self._set_listener_paused, listener, paused, reason, at)

    def _set_listener_paused(
        self, listener: str, paused: bool, reason: str | None, at: datetime
    ) -> None:
        with self._transaction():
            self._touch_listener(
                listener,
                {
                    "paused": int(paused),
                    "paused_reason": reason,
                    "paused_at": iso(at) if paused else None,
                    # a resumed listener gets a fresh disable_after window
                    **({} if paused else {"failing_since": None}),
                },
            )
            if not paused:
                # what waited for the listener goes now, not at its next scheduled retry
                self.conn.execute(
                    "UPDATE deliveries SET next_at = MIN(next_at, ?) "
                    "WHERE listener = ? AND state = 'pending'",
                    (at.timestamp(), listener),
                )
            self._bump_control()

    async def list_listener_states(self) -> list[ListenerState]:
        return await self._run(self._list_listener_states)

    def _list_listener_states(self) -> list[ListenerState]:
        counts: dict[str, dict[str, int]] = {}
        for listener, state, n in self.conn.execute(
            "SELECT listener, state, COUNT(*) FROM deliveries GROUP BY listener, state"
        ):
            counts.setdefault(listener, {})[state] = n
        rows = {r["name"]: r for r in self.database.table("listeners").rows}
        return listener_states(counts, rows, parse_iso)

    async def write_runtime(self, status: Mapping[str, Any]) -> None:
        await self._run(self._write_runtime, dumps(dict(status)))

    def _write_runtime(self, text: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('runtime', ?) ON CONFLICT (key) "
            "DO UPDATE SET value = excluded.value",
            (text,),
        )

    async def read_runtime(self) -> dict[str, Any] | None:
        return await self._run(self._read_runtime)

    def _read_runtime(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'runtime'").fetchone()
        value = None if row is None else orjson.loads(row[0])
        return value if isinstance(value, dict) else None

    async def control_version(self) -> int:
        return await self._run(self._control_version)

    def _control_version(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'control'").fetchone()
        return 0 if row is None else int(row[0])

    async def list_events(self, query: EventQuery) -> list[EventRecord]:
        return await self._run(self._list_events, query)

    def _list_events(self, query: EventQuery) -> list[EventRecord]:
        where, params = _where(event_filters(query), query.limit)
        rows = self.conn.execute(
            "SELECT e.*, (SELECT json_group_object(d.listener, d.state) FROM deliveries d "  # noqa: S608 - fixed clauses, values bound
            "WHERE d.event_seq = e.seq) AS delivery_states "
            f"FROM events e WHERE {where} ORDER BY e.seq DESC LIMIT :limit",
            params,
        ).fetchall()
        return [
            EventRecord(row_to_event(r), orjson.loads(r["delivery_states"] or "{}"))
            for r in reversed(rows)
        ]

    async def get_event(self, event_id: str) -> Event | None:
        return await self._run(self._get_event, event_id)

    def _get_event(self, event_id: str) -> Event | None:
        row = self.conn.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else row_to_event(row)

    async def list_deliveries(self, query: DeliveryQuery) -> list[DeliveryInfo]:
        return await self._run(self._list_deliveries, query)

    def _list_deliveries(self, query: DeliveryQuery) -> list[DeliveryInfo]:
        where, params = _where(delivery_filters(query), query.limit)
        rows = self.conn.execute(
            "SELECT d.*, e.id AS event_id, e.type FROM deliveries d "  # noqa: S608 - fixed clauses, values bound
            "JOIN events e ON e.seq = d.event_seq "
            f"WHERE {where} ORDER BY d.id DESC LIMIT :limit",
            params,
        ).fetchall()
        return [delivery_info_from_row(r, parse_iso) for r in reversed(rows)]

    async def list_attempts(self, delivery_id: int) -> list[AttemptInfo]:
        return await self._run(self._list_attempts, delivery_id)

    def _list_attempts(self, delivery_id: int) -> list[AttemptInfo]:
        rows = self.database.table("attempts").rows_where(
            "delivery_id = ?", [delivery_id], order_by="id"
        )
        return [
            AttemptInfo(
                at=datetime.fromisoformat(r["at"]),
                status=r["status"],
                duration_ms=r["duration_ms"],
                error=r["error"],
                response=r["response"],
            )
            for r in rows
        ]

    async def delivery_counts(self, states: Sequence[str]) -> dict[str, dict[str, int]]:
        return await self._run(self._delivery_counts, list(states))

    def _delivery_counts(self, states: list[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for state in states:
            # counting pending and dead every few seconds must not scan the delivered history;
            # without ANALYZE statistics the planner would pick the (listener, state) index
            index = STATE_INDEX.get(state)
            if index is None:
                raise ValueError(f"unknown delivery state {state!r}")
            # the state as a literal: a partial index cannot serve a bound parameter
            for listener, n in self.conn.execute(
                f"SELECT listener, COUNT(*) FROM deliveries INDEXED BY {index} "  # noqa: S608 - fixed names
                f"WHERE state = '{state}' GROUP BY listener"
            ):
                out.setdefault(listener, {})[state] = n
        return out

    async def tracked_counts(self) -> dict[str, TrackedCounts]:
        return await self._run(self._tracked_counts)

    def _tracked_counts(self) -> dict[str, TrackedCounts]:
        seen = dict(self.conn.execute("SELECT source, COUNT(*) FROM seen_keys GROUP BY source"))
        missing = dict(
            self.conn.execute("SELECT source, COUNT(*) FROM missing_items GROUP BY source")
        )
        return {
            s: TrackedCounts(seen.get(s, 0), missing.get(s, 0))
            for s in sorted(set(seen) | set(missing))
        }

    async def replay(self, request: ReplayRequest, at: datetime) -> ReplayResult:
        return await self._run(self._replay, request, at)

    def _replay(self, request: ReplayRequest, at: datetime) -> ReplayResult:
        where: list[str] = []
        params: dict[str, Any] = {"now": at.timestamp(), "at": iso(at)}
        unknown: list[str] = []
        if request.event_ids:
            params["ids"] = dumps(list(request.event_ids))
            found = {
                r[0]
                for r in self.conn.execute(
                    "SELECT id FROM events WHERE id IN (SELECT value FROM json_each(:ids))", params
                )
            }
            unknown = [i for i in request.event_ids if i not in found]
            where.append(
                "event_seq IN (SELECT seq FROM events WHERE id IN (SELECT value FROM json_each(:ids)))"
            )
        if request.dead:
            where.append("state = 'dead'")
        if not where:
            raise ValueError("replay needs event ids or dead = True")
        if request.listener is not None:
            where.append("listener = :listener")
            params["listener"] = request.listener
        if request.since is not None:
            where.append("updated_at >= :since")
            params["since"] = iso(request.since)
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = :now, "  # noqa: S608 - fixed clauses, values bound
                "updated_at = :at, delivered_at = NULL "
                f"WHERE {' AND '.join(where)}",
                params,
            )
            if cur.rowcount:
                self._bump_control()
        return ReplayResult(cur.rowcount, tuple(unknown))

    async def prune(self, before: datetime, *, batch: int = 5000) -> PruneResult:
        # Small transactions: polls and deliveries interleave with a long prune.
        deliveries = attempts = events = 0
        while True:
            d, a = await self._run(self._prune_deliveries, iso(before), batch)
            deliveries, attempts = deliveries + d, attempts + a
            if d < batch:
                break
        while True:
            e = await self._run(self._prune_events, iso(before), batch)
            events += e
            if e < batch:
                break
        return PruneResult(events=events, deliveries=deliveries, attempts=attempts)

    def _prune_deliveries(self, before: str, batch: int) -> tuple[int, int]:
        with self._transaction() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM deliveries WHERE state != 'pending' AND updated_at < ? LIMIT ?",
                    (before, batch),
                )
            ]
            if not ids:
                return 0, 0
            chosen = dumps(ids)
            attempts = conn.execute(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?))",
                (chosen,),
            ).rowcount
            conn.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?))", (chosen,)
            )
        return len(ids), attempts

    def _prune_events(self, before: str, batch: int) -> int:
        with self._transaction() as conn:
            return conn.execute(
                "DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e "
                "WHERE e.timestamp < ? AND NOT EXISTS "
                "(SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq) LIMIT ?)",
                (before, batch),
            ).rowcount

    async def heartbeat(
        self, instance: InstanceInfo, held: Sequence[str], ttl_s: float
    ) -> Heartbeat:
        return Heartbeat(live_instances=1, tokens=dict.fromkeys(held, 0))

    async def acquire_source_lease(
        self, source: str, owner: str, ttl_s: float, *, orphans_only: bool = False
    ) -> int | None:
        return 0

    async def release_source_leases(self, owner: str, sources: Sequence[str]) -> None:
        return None

    async def leave(self, owner: str) -> None:
        return None

    async def list_owners(self) -> OwnersReport:
        return OwnersReport(instances=[], unowned_sources=[], leases=[])  # one instance: none


def _where(filters: list[Filter], limit: int) -> tuple[str, dict[str, Any]]:
    """A WHERE clause with named placeholders, and its parameters (times stored as ISO text)."""
    clause = " AND ".join(f"{col} {op} :{name}" for col, op, name, _ in filters) or "1 = 1"
    params: dict[str, Any] = {"limit": limit}
    for _, _, name, value in filters:
        params[name] = iso(value) if isinstance(value, datetime) else value
    return clause, params
