"""The memory store's delivery queue: chain heads, durable claims, attempts, coalescing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from bridge.core.ids import new_event_id
from bridge.core.queue_rules import QueuedEntry, coalescible_tail, state_after_attempt
from bridge.errors import StoreError
from bridge.models import AttemptResult, Delivery, Event
from bridge.store.base import AttemptInfo, AttemptRecord, MergeUpdates
from bridge.store.memory._base import MemoryBase, StoredDelivery, copy, copy_event, required


class MemoryQueue(MemoryBase):
    """The delivery queue (:class:`bridge.store.base.DeliveryQueue`)."""

    def _heads(self, listeners: Iterable[str], exclude_ids: Sequence[int]) -> list[StoredDelivery]:
        """The first pending delivery of each (listener, source, key) chain: per-key order."""
        heads: dict[tuple[str, str, str], StoredDelivery] = {}
        for d in self._pending(listeners):
            chain = (d.listener, d.source, d.key_text)
            if chain not in heads or d.event_seq < heads[chain].event_seq:
                heads[chain] = d
        excluded = set(exclude_ids)
        return [d for d in heads.values() if d.id not in excluded]

    def _delivery(self, d: StoredDelivery) -> Delivery:
        return Delivery(
            d.id, d.listener, copy_event(self._events[d.event_seq]), d.attempts, d.next_at
        )

    async def due_deliveries(
        self, listener: str, now: float, limit: int, exclude_ids: Sequence[int]
    ) -> list[Delivery]:
        self._check_open()
        return [self._delivery(d) for d in self._due(listener, now, limit, exclude_ids)]

    def _due(
        self, listener: str, now: float, limit: int, exclude_ids: Sequence[int]
    ) -> list[StoredDelivery]:
        due = [d for d in self._heads([listener], exclude_ids) if d.next_at <= now]
        return sorted(due, key=lambda d: (d.next_at, d.id))[:limit]

    async def next_due_at(
        self, listeners: Sequence[str], exclude_ids: Sequence[int]
    ) -> float | None:
        self._check_open()
        return min((d.next_at for d in self._heads(listeners, exclude_ids)), default=None)

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
        self._check_open()
        due = self._due(listener, now, limit, exclude_ids)
        for d in due:
            if d.claimed_at is None:
                d.claimed_at = datetime.fromtimestamp(now, UTC)
        return [self._delivery(d) for d in due]

    async def release_claims(self, delivery_ids: Sequence[int], *, owner: str) -> None:
        self._check_open()
        attempted = {delivery_id for delivery_id, _ in self._attempts}
        for delivery_id in delivery_ids:
            d = self._deliveries.get(delivery_id)
            if d is not None and d.state == "pending" and d.id not in attempted:
                d.claimed_at = None

    async def record_attempt(
        self, delivery_id: int, at: datetime, result: AttemptResult, *, next_at: float | None
    ) -> str:
        self._check_open()
        d = self._deliveries.get(delivery_id)
        if d is None:
            raise StoreError(
                "record_attempt", f"no delivery with id {delivery_id}", location=self.location
            )
        at = required(at)
        self._attempts.append(
            (
                delivery_id,
                AttemptInfo(
                    at,
                    result.status,
                    result.duration_s * 1000,
                    result.error,
                    result.response_excerpt,
                ),
            )
        )
        d.state = state_after_attempt(result, next_at)
        d.attempts += 1
        d.next_at = next_at if next_at is not None else at.timestamp()
        d.updated_at = at
        d.delivered_at = at if result.ok else None
        d.last_status, d.last_error = result.status, result.error
        d.last_response = result.response_excerpt
        if result.ok:
            self._touch_listener(d.listener, {"last_success_at": at, "failing_since": None})
        else:
            self._touch_listener(d.listener, {"last_failure_at": at, "last_error": result.error})
            row = self._listeners[d.listener]
            if result.sent and row.get("failing_since") is None:
                row["failing_since"] = at
        return d.state

    async def record_attempts(self, attempts: Sequence[AttemptRecord]) -> list[str | StoreError]:
        outcomes: list[str | StoreError] = []
        for d, at, result, next_at in attempts:
            try:
                outcomes.append(await self.record_attempt(d, at, result, next_at=next_at))
            except StoreError as exc:
                outcomes.append(exc)
        return outcomes

    async def pending_count(self, listeners: Sequence[str] | None = None) -> int:
        self._check_open()
        return len(self._pending(listeners))

    async def coalesce_pending(
        self, listener: str, at: datetime, exclude_ids: Sequence[int], merge: MergeUpdates
    ) -> int:
        self._check_open()
        excluded = set(exclude_ids)
        chains: dict[tuple[str, str], list[StoredDelivery]] = {}
        for d in sorted(self._pending([listener]), key=lambda d: d.event_seq):
            chains.setdefault((d.source, d.key_text), []).append(d)
        at = required(at)
        merged = 0
        for (source, key_text), chain in sorted(chains.items()):
            run = coalescible_tail(chain, self._queued_entry, excluded)
            if not run:
                continue
            events = [self._events[d.event_seq] for d in run]
            changes = merge([copy_event(e) for e in events])
            into: int | None = None
            if changes is not None:
                last = events[-1]
                event = Event(
                    new_event_id(last.timestamp),
                    self._next_seq,
                    source,
                    last.key,
                    "updated",
                    last.timestamp,
                    copy(events[0].before),
                    copy(last.after),
                    copy(changes),
                )
                self._next_seq += 1
                self._events[event.seq] = event
                self._event_keys[event.seq] = key_text
                new = self._add_delivery(event.seq, listener, source, key_text, at)
                new.next_at = min(d.next_at for d in run)
                into = new.id
            for d in run:
                d.state, d.coalesced_into, d.updated_at = "coalesced", into, at
            merged += len(run) - (0 if into is None else 1)
        return merged

    def _queued_entry(self, d: StoredDelivery) -> QueuedEntry:
        event_type = self._events[d.event_seq].type
        return QueuedEntry(d.id, event_type, d.attempts, d.claimed_at is not None)

    async def watch_deliveries(self, wake: Callable[[], None]) -> None:
        return None  # no other instance can see this store
