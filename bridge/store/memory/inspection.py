"""The memory store's inspection, operator actions and (single-instance) coordination."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.models import Event, ListenerState
from bridge.store._rows import listener_states
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
from bridge.store.memory._base import MemoryBase, StoredDelivery, copy_event, required, utc

_COUNTED_STATES = ("pending", "dead", "delivered", "coalesced")


class MemoryInspection(MemoryBase):
    """Inspection, operations and coordination; one process, so it owns every lease."""

    async def heartbeat(
        self, instance: InstanceInfo, held: Sequence[str], ttl_s: float
    ) -> Heartbeat:
        self._check_open()
        return Heartbeat(live_instances=1, tokens=dict.fromkeys(held, 0))

    async def acquire_source_lease(
        self, source: str, owner: str, ttl_s: float, *, orphans_only: bool = False
    ) -> int | None:
        self._check_open()
        return 0

    async def release_source_leases(self, owner: str, sources: Sequence[str]) -> None:
        return None

    async def leave(self, owner: str) -> None:
        return None

    async def list_owners(self) -> OwnersReport:
        return OwnersReport(instances=[], unowned_sources=[], leases=[])  # one instance: none

    async def write_runtime(self, status: Mapping[str, Any]) -> None:
        self._check_open()
        self._runtime = orjson.dumps(dict(status))

    async def read_runtime(self) -> dict[str, Any] | None:
        self._check_open()
        value = None if self._runtime is None else orjson.loads(self._runtime)
        return value if isinstance(value, dict) else None

    async def control_version(self) -> int:
        self._check_open()
        return self._control

    async def set_listener_paused(
        self, listener: str, paused: bool, reason: str | None, at: datetime
    ) -> None:
        self._check_open()
        at = required(at)
        values: dict[str, Any] = {
            "paused": paused,
            "paused_reason": reason,
            "paused_at": at if paused else None,
        }
        if not paused:
            values["failing_since"] = None  # a resumed listener gets a fresh window
            for d in self._pending([listener]):
                d.next_at = min(d.next_at, at.timestamp())
        self._touch_listener(listener, values)
        self._control += 1

    async def list_listener_states(self) -> list[ListenerState]:
        self._check_open()
        counts: dict[str, dict[str, int]] = {}
        for d in self._deliveries.values():
            per = counts.setdefault(d.listener, {})
            per[d.state] = per.get(d.state, 0) + 1
        return listener_states(counts, self._listeners, utc)

    async def replay(self, request: ReplayRequest, at: datetime) -> ReplayResult:
        self._check_open()
        if not request.event_ids and not request.dead:
            raise ValueError("replay needs event ids or dead = True")
        at = required(at)
        by_id = {e.id: seq for seq, e in self._events.items()}
        unknown = [i for i in request.event_ids if i not in by_id]
        seqs = {by_id[i] for i in request.event_ids if i in by_id}
        chosen = [
            d
            for d in self._deliveries.values()
            if (not request.event_ids or d.event_seq in seqs)
            and (not request.dead or d.state == "dead")
            and (request.listener is None or d.listener == request.listener)
            and (request.since is None or d.updated_at >= request.since)
        ]
        for d in chosen:
            d.state, d.attempts, d.next_at = "pending", 0, at.timestamp()
            d.updated_at, d.delivered_at = at, None
        if chosen:
            self._control += 1
        return ReplayResult(len(chosen), tuple(unknown))

    async def prune(self, before: datetime, *, batch: int = 5000) -> PruneResult:
        self._check_open()
        gone = {
            d.id
            for d in self._deliveries.values()
            if d.state != "pending" and d.updated_at < before
        }
        attempts = sum(1 for delivery_id, _ in self._attempts if delivery_id in gone)
        self._attempts = [a for a in self._attempts if a[0] not in gone]
        for delivery_id in gone:
            del self._deliveries[delivery_id]
        referenced = {d.event_seq for d in self._deliveries.values()}
        old = [
            seq for seq, e in self._events.items() if e.timestamp < before and seq not in referenced
        ]
        for seq in old:
            del self._events[seq], self._event_keys[seq]
        return PruneResult(events=len(old), deliveries=len(gone), attempts=attempts)

    async def list_events(self, query: EventQuery) -> list[EventRecord]:
        self._check_open()
        matching = [
            e
            for seq, e in sorted(self._events.items())
            if (query.source is None or e.source == query.source)
            and (query.key is None or self._event_keys[seq] == query.key)
            and (query.type is None or (e.name or e.type) == query.type)
            and (query.since is None or e.timestamp >= query.since)
        ]
        newest = matching[-query.limit :] if query.limit > 0 else []
        states: dict[int, dict[str, str]] = {}
        for d in self._deliveries.values():
            states.setdefault(d.event_seq, {})[d.listener] = d.state
        return [EventRecord(copy_event(e), states.get(e.seq, {})) for e in newest]

    async def get_event(self, event_id: str) -> Event | None:
        self._check_open()
        found = next((e for e in self._events.values() if e.id == event_id), None)
        return None if found is None else copy_event(found)

    async def list_deliveries(self, query: DeliveryQuery) -> list[DeliveryInfo]:
        self._check_open()
        matching = [
            d
            for _, d in sorted(self._deliveries.items())
            if (query.listener is None or d.listener == query.listener)
            and (query.state is None or d.state == query.state)
            and (query.event_id is None or self._events[d.event_seq].id == query.event_id)
            and (query.since is None or d.updated_at >= query.since)
        ]
        chosen = matching[-query.limit :] if query.limit > 0 else []
        return [self._info(d) for d in chosen]

    def _info(self, d: StoredDelivery) -> DeliveryInfo:
        event = self._events[d.event_seq]
        return DeliveryInfo(
            id=d.id,
            event_id=event.id,
            listener=d.listener,
            source=d.source,
            key_text=d.key_text,
            type=event.type,
            state=d.state,
            attempts=d.attempts,
            next_at=datetime.fromtimestamp(d.next_at, UTC) if d.state == "pending" else None,
            created_at=d.created_at,
            updated_at=d.updated_at,
            delivered_at=d.delivered_at,
            last_status=d.last_status,
            last_error=d.last_error,
            last_response=d.last_response,
        )

    async def list_attempts(self, delivery_id: int) -> list[AttemptInfo]:
        self._check_open()
        return [a for i, a in self._attempts if i == delivery_id]

    async def delivery_counts(self, states: Sequence[str]) -> dict[str, dict[str, int]]:
        self._check_open()
        out: dict[str, dict[str, int]] = {}
        for state in states:
            if state not in _COUNTED_STATES:
                raise ValueError(f"unknown delivery state {state!r}")
            for d in self._deliveries.values():
                if d.state == state:
                    per = out.setdefault(d.listener, {})
                    per[state] = per.get(state, 0) + 1
        return out

    async def tracked_counts(self) -> dict[str, TrackedCounts]:
        self._check_open()
        names = {s for s, keys in self._seen.items() if keys}
        names |= {s for s, keys in self._missing.items() if keys}
        return {
            s: TrackedCounts(len(self._seen.get(s, {})), len(self._missing.get(s, {})))
            for s in sorted(names)
        }
