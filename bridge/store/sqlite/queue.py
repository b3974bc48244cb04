"""The SQLite store's delivery queue: due heads per key, durable claims, group-committed attempts."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.core.queue_rules import state_after_attempt
from bridge.errors import StoreError
from bridge.models import AttemptResult, Delivery, Event
from bridge.store._rows import dumps, key_from_json, loads
from bridge.store.base import AttemptRecord
from bridge.store.sqlite._base import iso, parse_iso, rollback
from bridge.store.sqlite.coalesce import SQLiteCoalescing

_ROWS_PER_STATEMENT = 100
"""Attempts written by one statement (11 parameters each, well under SQLite's limit)."""

_ATTEMPT_BATCH = """
CREATE TEMP VIEW IF NOT EXISTS attempt_batch
    (delivery_id, at, status, duration_ms, error, response, state, next_at, ok, sent, delivered_at)
    AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE 0;
CREATE TEMP TRIGGER IF NOT EXISTS attempt_batch_row INSTEAD OF INSERT ON attempt_batch BEGIN
    INSERT INTO attempts (delivery_id, at, status, duration_ms, error, response)
    VALUES (NEW.delivery_id, NEW.at, NEW.status, NEW.duration_ms, NEW.error, NEW.response);
    UPDATE deliveries SET attempts = attempts + 1, state = NEW.state, next_at = NEW.next_at,
        updated_at = NEW.at, delivered_at = NEW.delivered_at, last_status = NEW.status,
        last_error = NEW.error, last_response = NEW.response
    WHERE id = NEW.delivery_id;
    INSERT INTO listeners (name, last_success_at, failing_since)
    SELECT listener, NEW.at, NULL FROM deliveries WHERE id = NEW.delivery_id AND NEW.ok
    ON CONFLICT (name) DO UPDATE SET last_success_at = excluded.last_success_at,
        failing_since = NULL;
    INSERT INTO listeners (name, last_failure_at, last_error, failing_since)
    SELECT listener, NEW.at, NEW.error, CASE WHEN NEW.sent THEN NEW.at END
    FROM deliveries WHERE id = NEW.delivery_id AND NOT NEW.ok
    ON CONFLICT (name) DO UPDATE SET last_failure_at = excluded.last_failure_at,
        last_error = excluded.last_error,
        failing_since = CASE WHEN NEW.sent
            THEN coalesce(listeners.failing_since, excluded.last_failure_at)
            ELSE listeners.failing_since END;
END;
"""
"""A row written to ``attempt_batch`` is one attempt applied in full: its row in attempts, its
delivery's new state, and its listener's last success or failure (a failure that reached the
listener starts ``failing_since`` unless it is running; a success ends it). A batch of
attempts is then one INSERT of many rows, applied in their order, in one transaction: sqlite3
lets go of the GIL for every statement, and taking it back from a busy event loop can wait a
whole switch interval (5 ms). TEMP: made on the connection that records, no schema change."""


def _row_values(rows: int, columns: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * rows)


_CHAIN_HEAD = """NOT EXISTS (
    SELECT 1 FROM deliveries p
    WHERE p.listener = d.listener AND p.source = d.source
      AND p.key_text = d.key_text AND p.state = 'pending'
      AND p.event_seq < d.event_seq)"""
"""Delivery ``d`` is the head of its (listener, source, key) chain: per-key order."""


class SQLiteQueue(SQLiteCoalescing):
    """The delivery queue (:class:`bridge.store.base.DeliveryQueue`).

    One process owns a SQLite file (the state lock), so who holds a claim is the dispatcher's
    in-flight set; the row only records that an attempt started."""

    async def due_deliveries(
        self, listener: str, now: float, limit: int, exclude_ids: Sequence[int]
    ) -> list[Delivery]:
        return await self._run(self._due_deliveries, listener, now, limit, list(exclude_ids))

    def _due_deliveries(
        self, listener: str, now: float, limit: int, exclude_ids: list[int]
    ) -> list[Delivery]:
        # The head of each (listener, source, key) chain only: per-key order. The heads come
        # back as one row of JSON: sqlite3 lets go of the GIL for every row it steps to, and
        # taking it back from a busy event loop can wait a whole switch interval (5 ms).
        (text,) = self.conn.execute(
            f"""
            SELECT json_group_array(json_array(
                h.id, h.attempts, printf('%!.17g', h.next_at), e.seq, e.id, e.source, e.key,
                e.type, e.timestamp, e.before, e.after, e.changes, e.type_name))
            FROM (
                SELECT d.id, d.attempts, d.next_at, d.event_seq
                FROM deliveries d
                WHERE d.listener = :listener AND d.state = 'pending' AND d.next_at <= :now
                  AND d.id NOT IN (SELECT value FROM json_each(:exclude))
                  AND {_CHAIN_HEAD}
                ORDER BY d.next_at, d.id
                LIMIT :limit
            ) h JOIN events e ON e.seq = h.event_seq
            """,  # noqa: S608 - a constant fragment, no input
            {"listener": listener, "now": now, "limit": limit, "exclude": dumps(exclude_ids)},
        ).fetchone()
        heads = [(float(h[2]), h[0], h) for h in orjson.loads(text)]
        heads.sort(key=_due_order)  # an aggregate keeps no order of its own
        return [
            Delivery(
                h[0],
                listener,
                Event(
                    h[4],
                    h[3],
                    h[5],
                    key_from_json(h[6]),
                    h[7],
                    _event_time(h[8]),
                    loads(h[9]),
                    loads(h[10]),
                    orjson.loads(h[11]),
                    h[12],
                ),
                h[1],
                next_at,
            )
            for next_at, _, h in heads
        ]

    async def next_due_at(
        self, listeners: Sequence[str], exclude_ids: Sequence[int]
    ) -> float | None:
        return await self._run(self._next_due_at, list(listeners), list(exclude_ids))

    def _next_due_at(self, listeners: list[str], exclude_ids: list[int]) -> float | None:
        row = self.conn.execute(
            f"""
            SELECT MIN(d.next_at) FROM deliveries d
            WHERE d.state = 'pending' AND d.listener IN (SELECT value FROM json_each(:listeners))
              AND d.id NOT IN (SELECT value FROM json_each(:exclude))
              AND {_CHAIN_HEAD}
            """,  # noqa: S608 - a constant fragment, no input
            {"listeners": dumps(listeners), "exclude": dumps(exclude_ids)},
        ).fetchone()
        return None if row[0] is None else float(row[0])

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
        # One process owns the file, so who holds a claim is the dispatcher's in-flight set;
        # only "an attempt started" is written, before the request can leave.
        # ahead of the attempts waiting to be recorded: the dispatcher's slots wait for it
        return await self._run_first(
            self._claim_deliveries, listener, now, limit, list(exclude_ids)
        )

    def _claim_deliveries(
        self, listener: str, now: float, limit: int, exclude_ids: list[int]
    ) -> list[Delivery]:
        due = self._due_deliveries(listener, now, limit, exclude_ids)
        if due:
            # one statement, committed (to the WAL: it survives a kill) before any send
            # starts; no write at all when nothing is due. A CLI writing in between cannot
            # make this wrong: the flag only ever forbids merging.
            self.conn.execute(
                "UPDATE deliveries SET claimed_at = ? WHERE claimed_at IS NULL "
                "AND id IN (SELECT value FROM json_each(?))",
                (iso(datetime.fromtimestamp(now, UTC)), dumps([d.id for d in due])),
            )
        return due

    async def release_claims(self, delivery_ids: Sequence[int], *, owner: str) -> None:
        if delivery_ids:
            await self._run(self._release_claims, list(delivery_ids))

    def _release_claims(self, delivery_ids: list[int]) -> None:
        # nothing was sent: a delivery never attempted may be coalesced again
        self.conn.execute(
            "UPDATE deliveries SET claimed_at = NULL WHERE state = 'pending' "
            "AND id IN (SELECT value FROM json_each(?)) "
            "AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = deliveries.id)",
            (dumps(delivery_ids),),
        )

    async def record_attempt(
        self, delivery_id: int, at: datetime, result: AttemptResult, *, next_at: float | None
    ) -> str:
        # Group commit: attempts that finish while a write is running are recorded together in
        # the next transaction, instead of one transaction each; every attempt ends exactly as
        # if recorded alone.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        self._attempts.append((delivery_id, at, result, next_at, done))
        if self._attempts_writer is None or self._attempts_writer.done():
            self._attempts_writer = loop.create_task(self._write_attempts())
        return await done

    async def _write_attempts(self) -> None:
        while self._attempts:
            batch, self._attempts = self._attempts, []
            outcomes: list[str | Exception]
            try:
                outcomes = list(await self.record_attempts([AttemptRecord(*a[:4]) for a in batch]))
            except asyncio.CancelledError:
                for *_, done in batch:
                    done.cancel()
                raise
            except Exception as exc:  # a bug: every caller hears of it
                outcomes = [exc] * len(batch)
            for (*_, done), outcome in zip(batch, outcomes, strict=True):
                _settle(done, outcome)

    async def record_attempts(self, attempts: Sequence[AttemptRecord]) -> list[str | StoreError]:
        batch = [tuple(a) for a in attempts]
        if not batch:
            return []
        try:
            return list(await self._run(self._record_attempts, batch))
        except StoreError as exc:
            if len(batch) == 1:
                return [exc]
        # one bad attempt must not fail the others: record each on its own
        outcomes: list[str | StoreError] = []
        for attempt in batch:
            try:
                (state,) = await self._run(self._record_attempts, [attempt])
            except StoreError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(state)
        return outcomes

    def _record_attempts(
        self, batch: list[tuple[int, datetime, AttemptResult, float | None]]
    ) -> list[str]:
        conn = self.conn
        if conn is not self._attempt_batch_on:
            conn.executescript(_ATTEMPT_BATCH)
            self._attempt_batch_on = conn
        states = [state_after_attempt(result, next_at) for _, _, result, next_at in batch]
        rows: list[tuple[Any, ...]] = []
        for (d, at, r, next_at), state in zip(batch, states, strict=True):
            now = iso(at)
            rows.append(
                (
                    d,
                    now,
                    r.status,
                    r.duration_s * 1000,
                    r.error,
                    r.response_excerpt,
                    state,
                    next_at if next_at is not None else at.timestamp(),
                    r.ok,
                    r.sent,
                    now if r.ok else None,
                )
            )
        chunks = [
            rows[i : i + _ROWS_PER_STATEMENT] for i in range(0, len(rows), _ROWS_PER_STATEMENT)
        ]
        if len(chunks) == 1:
            _insert_attempts(conn, chunks[0])  # one statement: a transaction of its own
            return states
        conn.execute("BEGIN IMMEDIATE")
        try:
            for chunk in chunks:
                _insert_attempts(conn, chunk)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return states

    async def pending_count(self, listeners: Sequence[str] | None = None) -> int:
        return await self._run(self._pending_count, None if listeners is None else list(listeners))

    def _pending_count(self, listeners: list[str] | None) -> int:
        if listeners is None:
            row = self.conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
        else:
            row = self.conn.execute(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND listener IN "
                "(SELECT value FROM json_each(?))",
                (dumps(listeners),),
            )
        return int(row.fetchone()[0])

    async def watch_deliveries(self, wake: Callable[[], None]) -> None:
        return None


def _insert_attempts(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.execute(
        "INSERT INTO attempt_batch VALUES " + _row_values(len(rows), 11),  # noqa: S608 - placeholders only
        [v for row in rows for v in row],
    )


def _due_order(head: tuple[float, int, Any]) -> tuple[float, int]:
    return head[0], head[1]


def _event_time(text: str) -> datetime:
    moment = parse_iso(text)
    if moment is None:
        raise ValueError("an event's timestamp is NULL")
    return moment


def _settle(done: asyncio.Future[str], outcome: str | Exception) -> None:
    if done.done():  # the caller was cancelled; the attempt is recorded all the same
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)
