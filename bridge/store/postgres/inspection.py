"""The PostgreSQL store's inspection and operator actions (what the CLI reads and changes)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from bridge.models import Event, ListenerState
from bridge.store._rows import (
    Filter,
    delivery_filters,
    delivery_info_from_row,
    event_filters,
    listener_states,
)
from bridge.store.base import (
    AttemptInfo,
    DeliveryInfo,
    DeliveryQuery,
    EventQuery,
    EventRecord,
    PruneResult,
    ReplayRequest,
    ReplayResult,
    TrackedCounts,
)
from bridge.store.postgres._base import PostgresBase
from bridge.store.postgres._conn import row_to_event, utc

# delivery_counts: each state counted as a literal, so its partial index can serve it
_COUNTED_STATES = ("pending", "dead", "delivered", "coalesced")


class PostgresInspection(PostgresBase):
    """Inspection and operations (:class:`bridge.store.base.Inspection`, :class:`~bridge.store.base.Operations`)."""

    async def set_listener_paused(
        self, listener: str, paused: bool, reason: str | None, at: datetime
    ) -> None:
        async with self._connection("set_listener_paused") as conn, conn.transaction():
            # a resumed listener gets a fresh disable_after window
            await conn.execute(
                "INSERT INTO listeners (name, paused, paused_reason, paused_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "paused = excluded.paused, paused_reason = excluded.paused_reason, "
                "paused_at = excluded.paused_at" + ("" if paused else ", failing_since = NULL"),
                (listener, paused, reason, at if paused else None),
            )
            if not paused:
                # what waited for the listener goes now, not at its next scheduled retry
                await conn.execute(
                    "UPDATE deliveries SET next_at = least(next_at, %s) "
                    "WHERE listener = %s AND state = 'pending'",
                    (at.timestamp(), listener),
                )
                await conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
            await self._bump_control(conn)

    async def list_listener_states(self) -> list[ListenerState]:
        async with self._connection("list_listener_states") as conn:
            cur = await conn.execute(
                "SELECT listener, state, count(*) AS n FROM deliveries GROUP BY listener, state"
            )
            counts: dict[str, dict[str, int]] = {}
            for c_row in await cur.fetchall():
                counts.setdefault(c_row["listener"], {})[c_row["state"]] = int(c_row["n"])
            cur = await conn.execute("SELECT * FROM listeners")
            rows = {r["name"]: r for r in await cur.fetchall()}
        return listener_states(counts, rows, utc)

    async def list_events(self, query: EventQuery) -> list[EventRecord]:
        where, params = _where(event_filters(query), query.limit)
        async with self._connection("list_events") as conn:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT e.*, (SELECT json_object_agg(d.listener, d.state) FROM deliveries d "
                    "WHERE d.event_seq = e.seq) AS delivery_states "
                    "FROM events e WHERE {} ORDER BY e.seq DESC LIMIT %(limit)s"
                ).format(where),
                params,
            )
            rows = await cur.fetchall()
        return [EventRecord(row_to_event(r), r["delivery_states"] or {}) for r in reversed(rows)]

    async def get_event(self, event_id: str) -> Event | None:
        async with self._connection("get_event") as conn:
            cur = await conn.execute("SELECT * FROM events WHERE id = %s", (event_id,))
            row = await cur.fetchone()
        return None if row is None else row_to_event(row)

    async def list_deliveries(self, query: DeliveryQuery) -> list[DeliveryInfo]:
        where, params = _where(delivery_filters(query), query.limit)
        async with self._connection("list_deliveries") as conn:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT d.*, e.id AS event_id, e.type FROM deliveries d "
                    "JOIN events e ON e.seq = d.event_seq "
                    "WHERE {} ORDER BY d.id DESC LIMIT %(limit)s"
                ).format(where),
                params,
            )
            rows = await cur.fetchall()
        return [delivery_info_from_row(r, utc) for r in reversed(rows)]

    async def list_attempts(self, delivery_id: int) -> list[AttemptInfo]:
        async with self._connection("list_attempts") as conn:
            cur = await conn.execute(
                "SELECT * FROM attempts WHERE delivery_id = %s ORDER BY id", (delivery_id,)
            )
            rows = await cur.fetchall()
        return [
            AttemptInfo(
                at=r["at"].astimezone(UTC),
                status=r["status"],
                duration_ms=r["duration_ms"],
                error=r["error"],
                response=r["response"],
            )
            for r in rows
        ]

    async def delivery_counts(self, states: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        async with self._connection("delivery_counts") as conn:
            for state in states:
                if state not in _COUNTED_STATES:
                    raise ValueError(f"unknown delivery state {state!r}")
                # the state as a literal: a partial index cannot serve a bound parameter
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT listener, count(*) AS n FROM deliveries WHERE state = {} "
                        "GROUP BY listener"
                    ).format(sql.Literal(state))
                )
                for r in await cur.fetchall():
                    out.setdefault(r["listener"], {})[state] = int(r["n"])
        return out

    async def tracked_counts(self) -> dict[str, TrackedCounts]:
        async with self._connection("tracked_counts") as conn:
            cur = await conn.execute("SELECT source, count(*) AS n FROM seen_keys GROUP BY source")
            seen = {r["source"]: int(r["n"]) for r in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT source, count(*) AS n FROM missing_items GROUP BY source"
            )
            missing = {r["source"]: int(r["n"]) for r in await cur.fetchall()}
        return {
            s: TrackedCounts(seen.get(s, 0), missing.get(s, 0))
            for s in sorted(set(seen) | set(missing))
        }

    async def replay(self, request: ReplayRequest, at: datetime) -> ReplayResult:
        where: list[sql.Composable] = []
        params: dict[str, Any] = {"now": at.timestamp(), "at": at}
        if request.event_ids:
            params["ids"] = list(request.event_ids)
            where.append(sql.SQL("event_seq IN (SELECT seq FROM events WHERE id = ANY(%(ids)s))"))
        if request.dead:
            where.append(sql.SQL("state = 'dead'"))
        if not where:
            raise ValueError("replay needs event ids or dead = True")
        if request.listener is not None:
            where.append(sql.SQL("listener = %(listener)s"))
            params["listener"] = request.listener
        if request.since is not None:
            where.append(sql.SQL("updated_at >= %(since)s"))
            params["since"] = request.since
        unknown: list[str] = []
        async with self._connection("replay") as conn, conn.transaction():
            if request.event_ids:
                cur = await conn.execute(
                    "SELECT id FROM events WHERE id = ANY(%s)", (list(request.event_ids),)
                )
                found = {r["id"] for r in await cur.fetchall()}
                unknown = [i for i in request.event_ids if i not in found]
            # a claim in progress is left alone: its owner's record still lands (state pending)
            cur = await conn.execute(
                sql.SQL(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = %(now)s, "
                    "updated_at = %(at)s, delivered_at = NULL WHERE {}"
                ).format(sql.SQL(" AND ").join(where)),
                params,
            )
            requeued = cur.rowcount
            if requeued:
                await self._bump_control(conn)
                await conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
        return ReplayResult(requeued, tuple(unknown))

    async def prune(self, before: datetime, *, batch: int = 5000) -> PruneResult:
        # Small transactions, each a call of its own (and within its deadline): polls and
        # deliveries interleave with a long prune.
        deliveries = attempts = events = 0
        while True:
            async with self._connection("prune") as conn:
                cur = await conn.execute(
                    """
                    WITH chosen AS (
                        SELECT id FROM deliveries
                        WHERE state <> 'pending' AND updated_at < %(before)s LIMIT %(batch)s
                    ), a AS (
                        DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM chosen)
                        RETURNING 1
                    ), d AS (
                        DELETE FROM deliveries WHERE id IN (SELECT id FROM chosen) RETURNING 1
                    )
                    SELECT (SELECT count(*) FROM d) AS d, (SELECT count(*) FROM a) AS a
                    """,
                    {"before": before, "batch": batch},
                )
                row = await cur.fetchone()
            d, a = (int(row["d"]), int(row["a"])) if row else (0, 0)
            deliveries, attempts = deliveries + d, attempts + a
            if d < batch:
                break
        while True:
            async with self._connection("prune") as conn:
                cur = await conn.execute(
                    "DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e "
                    "WHERE e.timestamp < %s AND NOT EXISTS "
                    "(SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq) LIMIT %s)",
                    (before, batch),
                )
            events += cur.rowcount
            if cur.rowcount < batch:
                break
        return PruneResult(events=events, deliveries=deliveries, attempts=attempts)


def _where(filters: list[Filter], limit: int) -> tuple[sql.Composable, dict[str, Any]]:
    """A WHERE clause with named placeholders, and its parameters."""
    parts = [
        sql.SQL("{} " + op + " {}").format(sql.SQL(col), sql.Placeholder(name))
        for col, op, name, _ in filters
    ]
    params: dict[str, Any] = {"limit": limit, **{name: value for _, _, name, value in filters}}
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")), params
