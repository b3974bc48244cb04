"""The SQLite store's delivery queue: due heads per key, durable claims, group-committed attempts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.core.queue_rules import state_after_attempt
from bridge.models import AttemptResult, Delivery, Event
from bridge.store._rows import dumps, key_from_json, loads
from bridge.store.sqlite._base import iso, parse_iso, rollback
from bridge.store.sqlite.coalesce import SQLiteCoalescing

_ROWS_PER_STATEMENT = 100
"""Attempts written by one statement (8 parameters each, well under SQLite's limit)."""

_INSERT_ATTEMPT = (
    "INSERT INTO attempts (delivery_id, at, status, duration_ms, error, response) VALUES "
)
_UPDATE_DELIVERIES = (
    "WITH v (id, state, next_at, at, delivered_at, status, error, response) AS "
    "(VALUES {values}) "
    "UPDATE deliveries SET attempts = attempts + 1, (state, next_at, updated_at, "
    "delivered_at, last_status, last_error, last_response) = (SELECT state, next_at, at, "
    "delivered_at, status, error, response FROM v WHERE v.id = deliveries.id) "
    "WHERE id IN (SELECT id FROM v)"
)


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
            try:
                states = await self._run(self._record_attempts, [a[:4] for a in batch])
            except asyncio.CancelledError:
                for *_, done in batch:
                    done.cancel()
                raise
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][4], exc)
                    continue
                # one bad attempt must not fail the others: record each on its own
                for *attempt, done in batch:
                    try:
                        (state,) = await self._run(self._record_attempts, [tuple(attempt)])
                    except Exception as single_exc:
                        _settle(done, single_exc)
                    else:
                        _settle(done, state)
                continue
            for (*_, done), state in zip(batch, states, strict=True):
                _settle(done, state)

    def _record_attempts(
        self, batch: list[tuple[int, datetime, AttemptResult, float | None]]
    ) -> list[str]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            states = self._write_attempts_rows(batch)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return states

    def _write_attempts_rows(
        self, batch: list[tuple[int, datetime, AttemptResult, float | None]]
    ) -> list[str]:
        # A handful of statements per batch, not four per attempt, each with every row of
        # the batch in it: sqlite3 lets go of the GIL for every statement (and every row it
        # steps to), and taking it back from a busy event loop can wait a whole switch
        # interval.
        conn = self.conn
        states = [state_after_attempt(result, next_at) for _, _, result, next_at in batch]
        stamps = [iso(at) for _, at, _, _ in batch]
        attempts = [
            (d, now, r.status, r.duration_s * 1000, r.error, r.response_excerpt)
            for (d, _, r, _), now in zip(batch, stamps, strict=True)
        ]
        updates = [
            (
                d,
                state,
                next_at if next_at is not None else at.timestamp(),
                now,
                now if r.ok else None,
                r.status,
                r.error,
                r.response_excerpt,
            )
            for (d, at, r, next_at), now, state in zip(batch, stamps, states, strict=True)
        ]
        ids = [d for d, *_ in batch]
        if len(set(ids)) < len(ids):
            # the same delivery twice: applied in turn, one statement each
            conn.executemany(_INSERT_ATTEMPT + _row_values(1, 6), attempts)
            conn.executemany(_UPDATE_DELIVERIES.format(values=_row_values(1, 8)), updates)
        else:
            for i in range(0, len(batch), _ROWS_PER_STATEMENT):
                chunk_a = attempts[i : i + _ROWS_PER_STATEMENT]
                chunk_u = updates[i : i + _ROWS_PER_STATEMENT]
                conn.execute(
                    _INSERT_ATTEMPT + _row_values(len(chunk_a), 6),
                    [v for row in chunk_a for v in row],
                )
                conn.execute(
                    _UPDATE_DELIVERIES.format(values=_row_values(len(chunk_u), 8)),
                    [v for row in chunk_u for v in row],
                )
        (owned,) = conn.execute(
            "SELECT json_group_array(json_array(id, listener)) FROM deliveries "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (dumps(ids),),
        ).fetchone()
        owners: dict[int, str] = dict(orjson.loads(owned))
        # Each listener's row once per batch, as if its attempts had been applied in turn.
        touched: dict[str, dict[str, Any]] = {}
        failing_from: dict[str, str | None] = {}
        """Listeners whose failing_since becomes this time unless it already is set."""
        for (d, _, r, _), now in zip(batch, stamps, strict=True):
            listener = owners[d]
            fields = touched.setdefault(listener, {})
            if r.ok:
                fields.update(last_success_at=now, failing_since=None)
                failing_from.pop(listener, None)
                continue
            fields.update(last_failure_at=now, last_error=r.error)
            if not r.sent:
                continue
            if "failing_since" in fields:
                if fields["failing_since"] is None:
                    fields["failing_since"] = now
            else:
                failing_from.setdefault(listener, now)
        for listener, fields in touched.items():
            self._touch_listener(listener, fields)
        for listener, now in failing_from.items():
            conn.execute(
                "UPDATE listeners SET failing_since = COALESCE(failing_since, ?) WHERE name = ?",
                (now, listener),
            )
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
