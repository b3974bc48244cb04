"""The PostgreSQL store's delivery queue: claims with ``FOR UPDATE SKIP LOCKED``, per-key order
across instances, and LISTEN/NOTIFY to wake the dispatchers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime

import psycopg
from psycopg import sql

from bridge.core.queue_rules import state_after_attempt
from bridge.errors import StoreError
from bridge.models import AttemptResult, Delivery
from bridge.store.base import AttemptRecord
from bridge.store.postgres._conn import (
    CHECK_TIMEOUT_S,
    LISTEN_PROBE_S,
    Deadline,
    describe_error,
    log,
    row_to_delivery,
)
from bridge.store.postgres.coalesce import PostgresCoalescing

# Only the chain head of each (listener, source, key) may be attempted: per-key order.
# OFFSET 0 keeps the planner from turning this into an anti-join over every pending delivery
# (it did, on fresh tables: 0.7 s for 1000 rows); as a per-row probe of deliveries_order it lets
# the scan in next_at order stop after LIMIT rows, as SQLite's plan does.
_IS_CHAIN_HEAD = """
    NOT EXISTS (
        SELECT 1 FROM deliveries p
        WHERE p.listener = d.listener AND p.source = d.source
          AND p.key_text = d.key_text AND p.state = 'pending'
          AND p.event_seq < d.event_seq
        OFFSET 0)
"""


class PostgresQueue(PostgresCoalescing):
    """The delivery queue (:class:`bridge.store.base.DeliveryQueue`)."""

    async def due_deliveries(
        self, listener: str, now: float, limit: int, exclude_ids: Sequence[int]
    ) -> list[Delivery]:
        async with self._connection("due_deliveries") as conn:
            cur = await conn.execute(
                f"""
                SELECT d.id AS delivery_id, d.listener, d.attempts, d.next_at, e.*
                FROM deliveries d JOIN events e ON e.seq = d.event_seq
                WHERE d.listener = %(listener)s AND d.state = 'pending' AND d.next_at <= %(now)s
                  AND (d.claimed_until IS NULL OR d.claimed_until <= clock_timestamp())
                  AND d.id <> ALL(%(exclude)s) AND {_IS_CHAIN_HEAD}
                ORDER BY d.next_at, d.id
                LIMIT %(limit)s
                """,  # noqa: S608 - a constant fragment, no input
                {"listener": listener, "now": now, "limit": limit, "exclude": list(exclude_ids)},
            )
            rows = await cur.fetchall()
        return [row_to_delivery(r) for r in rows]

    async def claim_deliveries(
        self,
        listener: str,
        now: float,
        limit: int,
        exclude_ids: Sequence[int],
        *,
        owner: str,
        claim_s: float,
    ) -> list[Delivery]:
        # A head claimed by another live instance is skipped, and what follows it on its key
        # is not a head: the key waits for that instance, so order holds across instances.
        async with self._connection("claim_deliveries") as conn:
            cur = await conn.execute(
                f"""
                WITH cand AS (
                    SELECT d.id FROM deliveries d
                    WHERE d.listener = %(listener)s AND d.state = 'pending'
                      AND d.next_at <= %(now)s
                      AND (d.claimed_until IS NULL OR d.claimed_until <= clock_timestamp())
                      AND d.id <> ALL(%(exclude)s) AND {_IS_CHAIN_HEAD}
                    ORDER BY d.next_at, d.id
                    LIMIT %(limit)s
                    FOR UPDATE OF d SKIP LOCKED
                )
                UPDATE deliveries d SET claimed_by = %(owner)s,
                    claimed_until = clock_timestamp() + %(claim_s)s * interval '1 second',
                    claimed_at = coalesce(d.claimed_at, clock_timestamp())
                FROM cand, events e
                WHERE d.id = cand.id AND e.seq = d.event_seq
                RETURNING d.id AS delivery_id, d.listener, d.attempts, d.next_at, e.*
                """,  # noqa: S608 - a constant fragment, no input
                {
                    "listener": listener,
                    "now": now,
                    "limit": limit,
                    "exclude": list(exclude_ids),
                    "owner": owner,
                    "claim_s": claim_s,
                },
            )
            rows = await cur.fetchall()
        return sorted((row_to_delivery(r) for r in rows), key=lambda d: (d.next_at, d.id))

    async def release_claims(self, delivery_ids: Sequence[int], *, owner: str) -> None:
        if not delivery_ids:
            return
        async with self._connection("release_claims") as conn:
            await conn.execute(
                "UPDATE deliveries d SET claimed_by = NULL, claimed_until = NULL, "
                # nothing was sent: a delivery never attempted may be coalesced again
                "claimed_at = CASE WHEN EXISTS (SELECT 1 FROM attempts a "
                "WHERE a.delivery_id = d.id) THEN d.claimed_at END "
                "WHERE id = ANY(%s) AND claimed_by = %s AND state = 'pending'",
                (list(delivery_ids), owner),
            )

    async def next_due_at(
        self, listeners: Sequence[str], exclude_ids: Sequence[int]
    ) -> float | None:
        # The first unclaimed head per listener (an ordered index scan each), or the moment a
        # head claimed elsewhere comes back if its owner dies, whichever is sooner.
        async with self._connection("next_due_at") as conn:
            cur = await conn.execute(
                f"""
                SELECT least(
                    (SELECT min(h.next_at) FROM unnest(%(listeners)s::text[]) AS l(name)
                     CROSS JOIN LATERAL (
                        SELECT d.next_at FROM deliveries d
                        WHERE d.listener = l.name AND d.state = 'pending'
                          AND (d.claimed_until IS NULL OR d.claimed_until <= clock_timestamp())
                          AND d.id <> ALL(%(exclude)s) AND {_IS_CHAIN_HEAD}
                        ORDER BY d.next_at LIMIT 1) h),
                    (SELECT extract(epoch FROM min(d.claimed_until))::float8 FROM deliveries d
                     WHERE d.claimed_by IS NOT NULL AND d.state = 'pending'
                       AND d.listener = ANY(%(listeners)s) AND d.id <> ALL(%(exclude)s))
                ) AS at
                """,  # noqa: S608 - a constant fragment, no input
                {"listeners": list(listeners), "exclude": list(exclude_ids)},
            )
            row = await cur.fetchone()
        return None if row is None or row["at"] is None else float(row["at"])

    async def record_attempt(
        self, delivery_id: int, at: datetime, result: AttemptResult, *, next_at: float | None
    ) -> str:
        state = state_after_attempt(result, next_at)
        if result.ok:
            touch = "last_success_at = excluded.last_success_at, failing_since = NULL"
        else:
            touch = "last_failure_at = excluded.last_failure_at, last_error = excluded.last_error"
            if result.sent:  # a failure that reached the receiver starts or extends the streak
                touch += (
                    ", failing_since = coalesce(listeners.failing_since, excluded.failing_since)"
                )
        # One statement, one round trip. `state = 'pending'` keeps a late recorder (an instance
        # whose claim expired mid-send) from reviving what another instance already finished.
        async with self._connection("record_attempt") as conn:
            cur = await conn.execute(
                f"""
                WITH d AS (
                    UPDATE deliveries SET state = %(state)s, attempts = attempts + 1,
                        next_at = %(next_at)s, updated_at = %(at)s, delivered_at = %(delivered_at)s,
                        last_status = %(status)s, last_error = %(error)s,
                        last_response = %(response)s, claimed_by = NULL, claimed_until = NULL
                    WHERE id = %(id)s AND state = 'pending'
                    RETURNING state
                ), a AS (
                    INSERT INTO attempts (delivery_id, at, status, duration_ms, error, response)
                    VALUES (%(id)s, %(at)s, %(status)s, %(duration_ms)s, %(error)s, %(response)s)
                ), l AS (
                    INSERT INTO listeners (name, last_success_at, last_failure_at, last_error,
                                           failing_since)
                    SELECT listener, %(success_at)s, %(failure_at)s, %(error)s, %(failing_since)s
                    FROM deliveries WHERE id = %(id)s
                    ON CONFLICT (name) DO UPDATE SET {touch}
                )
                SELECT coalesce((SELECT state FROM d),
                                (SELECT state FROM deliveries WHERE id = %(id)s)) AS state
                """,  # noqa: S608 - a choice of two constant fragments
                {
                    "id": delivery_id,
                    "state": state,
                    "next_at": next_at if next_at is not None else at.timestamp(),
                    "at": at,
                    "delivered_at": at if result.ok else None,
                    "status": result.status,
                    "error": result.error,
                    "response": result.response_excerpt,
                    "duration_ms": result.duration_s * 1000,
                    "success_at": at if result.ok else None,
                    "failure_at": None if result.ok else at,
                    "failing_since": at if not result.ok and result.sent else None,
                },
            )
            row = await cur.fetchone()
        if row is None or row["state"] is None:
            raise StoreError(
                "record_attempt", f"no delivery with id {delivery_id}", location=self.location
            )
        return str(row["state"])

    async def record_attempts(self, attempts: Sequence[AttemptRecord]) -> list[str | StoreError]:
        # A statement each, on pooled connections: those of different deliveries at once,
        # those of one delivery in turn (statements made at once have no order)
        outcomes: dict[int, str | StoreError] = {}
        turns: dict[int, list[int]] = {}
        for i, attempt in enumerate(attempts):
            turns.setdefault(attempt.delivery_id, []).append(i)

        async def record(indices: list[int]) -> None:
            for i in indices:
                d, at, result, next_at = attempts[i]
                try:
                    outcomes[i] = await self.record_attempt(d, at, result, next_at=next_at)
                except StoreError as exc:
                    outcomes[i] = exc

        await asyncio.gather(*(record(indices) for indices in turns.values()))
        return [outcomes[i] for i in range(len(attempts))]

    async def pending_count(self, listeners: Sequence[str] | None = None) -> int:
        async with self._connection("pending_count") as conn:
            if listeners is None:
                cur = await conn.execute(
                    "SELECT count(*) AS n FROM deliveries WHERE state = 'pending'"
                )
            else:
                cur = await conn.execute(
                    "SELECT count(*) AS n FROM deliveries WHERE state = 'pending' "
                    "AND listener = ANY(%s)",
                    (list(listeners),),
                )
            row = await cur.fetchone()
        return int(row["n"]) if row else 0

    async def watch_deliveries(self, wake: Callable[[], None]) -> None:
        pause_s = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            except psycopg.Error as exc:
                log.warning(
                    "LISTEN connection: %s; retrying in %.0fs", describe_error(exc), pause_s
                )
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, 10.0)
                continue
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                pause_s = 0.5
                wake()  # whatever was committed while we were not listening
                while True:
                    async for _notify in conn.notifies(timeout=LISTEN_PROBE_S):
                        wake()
                    # quiet for a while: is the server still there? (a silent network break
                    # would otherwise leave us listening to nothing, for good)
                    timer = Deadline(conn, CHECK_TIMEOUT_S)
                    try:
                        await conn.execute("")
                    finally:
                        timer.cancel()
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost: %s; reconnecting", describe_error(exc))
                await asyncio.sleep(pause_s)
            finally:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
