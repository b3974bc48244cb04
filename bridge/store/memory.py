"""An in-memory store (``memory:``): the whole interface over plain dicts, for tests and dry runs.

It keeps the SQL backends' semantics, checked by the same contract suite: one commit is all or
nothing, stale snapshots are refused, deliveries leave in per-key order, claims are durable,
coalescing, replay and retention behave alike. Values are copied in and out as JSON, as a
database would, so a caller mutating what it got back changes nothing stored. Like SQLite it
serves a single instance, so it owns every lease. Nothing outlives the process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.core import source_state
from bridge.core.ids import new_event_id
from bridge.core.queue_rules import QueuedEntry, coalescible_tail, state_after_attempt
from bridge.errors import StaleSnapshot, StoreError
from bridge.models import (
    AttemptResult,
    Delivery,
    Event,
    ItemKey,
    ListenerState,
    SourceState,
)
from bridge.store._rows import SOURCE_FIELDS, listener_states
from bridge.store.base import (
    Access,
    AttemptInfo,
    DeliveryInfo,
    DeliveryQuery,
    EventQuery,
    EventRecord,
    Heartbeat,
    InstanceInfo,
    MergeUpdates,
    OwnersReport,
    PollCommit,
    PruneResult,
    ReplayRequest,
    ReplayResult,
    SnapshotHashes,
)

_COUNTED_STATES = ("pending", "dead", "delivered", "coalesced")


def _copy(value: Any) -> Any:
    """A deep copy through JSON: what a database hands back is never the caller's object."""
    return orjson.loads(orjson.dumps(value))


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


def _copy_event(event: Event) -> Event:
    return replace(
        event,
        before=_copy(event.before),
        after=_copy(event.after),
        changes=_copy(event.changes),
    )


@dataclass
class _Delivery:
    id: int
    event_seq: int
    listener: str
    source: str
    key_text: str
    next_at: float
    created_at: datetime
    updated_at: datetime
    state: str = "pending"
    attempts: int = 0
    delivered_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    last_response: str | None = None
    coalesced_into: int | None = None
    claimed_at: datetime | None = None


@dataclass(frozen=True)
class _Item:
    key: ItemKey
    hash: str
    value: bytes


_LISTENER_COLUMNS = (
    "paused",
    "paused_reason",
    "paused_at",
    "last_success_at",
    "last_failure_at",
    "last_error",
    "failing_since",
)


class MemoryStore:
    """The in-memory backend of :class:`bridge.store.base.Store`."""

    def __init__(self, *, access: Access = "daemon"):
        self.location = "memory:"
        self.access: Access = access
        self._open = False
        self._sources: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, int] = {}
        self._items: dict[str, dict[str, _Item]] = {}
        self._events: dict[int, Event] = {}
        self._event_keys: dict[int, str] = {}
        """Event seq -> the stored key text (what ``EventQuery.key`` names)."""
        self._deliveries: dict[int, _Delivery] = {}
        self._attempts: list[tuple[int, AttemptInfo]] = []
        self._listeners: dict[str, dict[str, Any]] = {}
        self._runtime: bytes | None = None
        self._control = 0
        self._next_seq = 1
        self._next_delivery = 1

    # -- plumbing ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("use", "the store is not open", location=self.location)

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    # -- sources and snapshots --------------------------------------------------------------

    def _source(self, name: str) -> SourceState | None:
        row = self._sources.get(name)
        if row is None:
            return None
        return SourceState(name=name, **{k: _copy_field(k, v) for k, v in row.items()})

    def _upsert_source(self, name: str, values: Mapping[str, Any]) -> None:
        row = self._sources.setdefault(name, {})
        for key, value in values.items():
            if key == "snapshot_version":
                self._versions[name] = int(value)
            else:
                row[key] = _copy_field(key, value)

    async def get_source_state(self, source: str) -> SourceState | None:
        self._check_open()
        return self._source(source)

    async def list_source_states(self) -> list[SourceState]:
        self._check_open()
        return [s for name in sorted(self._sources) if (s := self._source(name)) is not None]

    async def load_hashes(self, source: str) -> SnapshotHashes:
        self._check_open()
        items = self._items.get(source, {})
        return SnapshotHashes(
            self._versions.get(source, 0), {k: it.hash for k, it in items.items()}
        )

    async def snapshot_version(self, source: str) -> int:
        self._check_open()
        return self._versions.get(source, 0)

    async def load_items(
        self, source: str, key_texts: Sequence[str]
    ) -> dict[str, tuple[ItemKey, Any]]:
        self._check_open()
        items = self._items.get(source, {})
        return {k: (items[k].key, orjson.loads(items[k].value)) for k in key_texts if k in items}

    async def commit_poll(self, commit: PollCommit) -> list[Event]:
        self._check_open()
        version = self._versions.get(commit.source, 0)
        if commit.expected_version is not None and version != commit.expected_version:
            raise StaleSnapshot(
                commit.source,
                f"snapshot of {commit.source!r} moved from version "
                f"{commit.expected_version} to {version} during the poll",
            )
        # everything is built before anything is stored: the commit is all or nothing
        upserts = {
            it.key_text: _Item(
                it.key if isinstance(it.key, str) else tuple(it.key),
                it.hash,
                orjson.dumps(it.value),
            )
            for it in commit.upserts
        }
        events = [
            Event(
                new_event_id(commit.polled_at),
                self._next_seq + n,
                commit.source,
                change.key,
                change.type,
                _required(commit.polled_at),
                _copy(change.before),
                _copy(change.after),
                _copy(change.changes),
            )
            for n, change in enumerate(commit.changes)
        ]
        routes = list(zip(events, commit.changes, commit.routes, strict=True))
        fields_ = source_state.after_commit(
            polled_at=commit.polled_at,
            duration_s=commit.duration_s,
            result=commit.result,
            item_count=commit.item_count,
            fingerprint=commit.fingerprint,
            snapshot_version=version + 1,
            validators=commit.validators,
        )
        items = self._items.setdefault(commit.source, {})
        items.update(upserts)
        for key_text in commit.deletes:
            items.pop(key_text, None)
        self._next_seq += len(events)
        at = _required(commit.polled_at)
        for event, change, listeners in routes:
            self._events[event.seq] = event
            self._event_keys[event.seq] = change.key_text
            for listener in listeners:
                self._add_delivery(event.seq, listener, commit.source, change.key_text, at)
        self._upsert_source(commit.source, fields_)
        return [_copy_event(e) for e in events]

    def _add_delivery(
        self, seq: int, listener: str, source: str, key_text: str, at: datetime
    ) -> _Delivery:
        delivery = _Delivery(
            self._next_delivery, seq, listener, source, key_text, at.timestamp(), at, at
        )
        self._deliveries[delivery.id] = delivery
        self._next_delivery += 1
        return delivery

    async def record_poll_failure(
        self,
        source: str,
        at: datetime,
        duration_s: float,
        error: str,
        *,
        result: str = "error",
        not_before: datetime | None = None,
    ) -> SourceState:
        self._check_open()
        previous = self._sources.get(source, {}).get("consecutive_failures", 0)
        self._upsert_source(
            source,
            source_state.after_failure(
                previous_failures=previous,
                at=at,
                duration_s=duration_s,
                error=error,
                result=result,
                not_before=not_before,
            ),
        )
        state = self._source(source)
        assert state is not None  # noqa: S101 - just written
        return state

    async def record_poll_unchanged(
        self,
        source: str,
        at: datetime,
        duration_s: float,
        *,
        result: str = "ok",
        validators: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self._check_open()
        self._upsert_source(
            source,
            source_state.after_unchanged(
                at=at, duration_s=duration_s, result=result, validators=validators
            ),
        )

    async def update_source_state(self, source: str, **values: Any) -> None:
        self._check_open()
        unknown = set(values) - set(SOURCE_FIELDS)
        if unknown:
            raise ValueError(f"unknown source state fields: {sorted(unknown)}")
        self._upsert_source(source, values)

    # -- the delivery queue -----------------------------------------------------------------

    def _pending(self, listeners: Iterable[str] | None = None) -> list[_Delivery]:
        wanted = None if listeners is None else set(listeners)
        return [
            d
            for d in self._deliveries.values()
            if d.state == "pending" and (wanted is None or d.listener in wanted)
        ]

    def _heads(self, listeners: Iterable[str], exclude_ids: Sequence[int]) -> list[_Delivery]:
        """The first pending delivery of each (listener, source, key) chain: per-key order."""
        heads: dict[tuple[str, str, str], _Delivery] = {}
        for d in self._pending(listeners):
            chain = (d.listener, d.source, d.key_text)
            if chain not in heads or d.event_seq < heads[chain].event_seq:
                heads[chain] = d
        excluded = set(exclude_ids)
        return [d for d in heads.values() if d.id not in excluded]

    def _delivery(self, d: _Delivery) -> Delivery:
        return Delivery(
            d.id, d.listener, _copy_event(self._events[d.event_seq]), d.attempts, d.next_at
        )

    async def due_deliveries(
        self, listener: str, now: float, limit: int, exclude_ids: Sequence[int]
    ) -> list[Delivery]:
        self._check_open()
        return [self._delivery(d) for d in self._due(listener, now, limit, exclude_ids)]

    def _due(
        self, listener: str, now: float, limit: int, exclude_ids: Sequence[int]
    ) -> list[_Delivery]:
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
        at = _required(at)
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

    def _touch_listener(self, listener: str, values: Mapping[str, Any]) -> None:
        row = self._listeners.setdefault(listener, dict.fromkeys(_LISTENER_COLUMNS))
        row.setdefault("name", listener)
        row.update(values)

    async def pending_count(self, listeners: Sequence[str] | None = None) -> int:
        self._check_open()
        return len(self._pending(listeners))

    async def coalesce_pending(
        self, listener: str, at: datetime, exclude_ids: Sequence[int], merge: MergeUpdates
    ) -> int:
        self._check_open()
        excluded = set(exclude_ids)
        chains: dict[tuple[str, str], list[_Delivery]] = {}
        for d in sorted(self._pending([listener]), key=lambda d: d.event_seq):
            chains.setdefault((d.source, d.key_text), []).append(d)
        at = _required(at)
        merged = 0
        for (source, key_text), chain in sorted(chains.items()):
            run = coalescible_tail(chain, self._queued_entry, excluded)
            if not run:
                continue
            events = [self._events[d.event_seq] for d in run]
            changes = merge([_copy_event(e) for e in events])
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
                    _copy(events[0].before),
                    _copy(last.after),
                    _copy(changes),
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

    def _queued_entry(self, d: _Delivery) -> QueuedEntry:
        event_type = self._events[d.event_seq].type
        return QueuedEntry(d.id, event_type, d.attempts, d.claimed_at is not None)

    async def watch_deliveries(self, wake: Callable[[], None]) -> None:
        return None  # no other instance can see this store

    # -- coordination: one process, so it owns everything ----------------------------------

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
        return OwnersReport(instances=[], unowned_sources=[])

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

    # -- listeners and operator actions -----------------------------------------------------

    async def set_listener_paused(
        self, listener: str, paused: bool, reason: str | None, at: datetime
    ) -> None:
        self._check_open()
        at = _required(at)
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
        return listener_states(counts, self._listeners, _utc)

    async def replay(self, request: ReplayRequest, at: datetime) -> ReplayResult:
        self._check_open()
        if not request.event_ids and not request.dead:
            raise ValueError("replay needs event ids or dead = True")
        at = _required(at)
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

    # -- inspection -------------------------------------------------------------------------

    async def list_events(self, query: EventQuery) -> list[EventRecord]:
        self._check_open()
        matching = (
            [
                e
                for seq, e in sorted(self._events.items())
                if (query.source is None or e.source == query.source)
                and (query.key is None or self._event_keys[seq] == query.key)
                and (query.type is None or e.type == query.type)
                and (query.since is None or e.timestamp >= query.since)
            ][-query.limit :]
            if query.limit > 0
            else []
        )
        states: dict[int, dict[str, str]] = {}
        for d in self._deliveries.values():
            states.setdefault(d.event_seq, {})[d.listener] = d.state
        return [EventRecord(_copy_event(e), states.get(e.seq, {})) for e in matching]

    async def get_event(self, event_id: str) -> Event | None:
        self._check_open()
        found = next((e for e in self._events.values() if e.id == event_id), None)
        return None if found is None else _copy_event(found)

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

    def _info(self, d: _Delivery) -> DeliveryInfo:
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


def _copy_field(name: str, value: Any) -> Any:
    """A source-state value as stored: times in UTC, validators copied, flags as bools."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if name == "validators":
        return _copy(value) if value is not None else {}
    if name == "accept_requested":
        return bool(value)
    return value


def _required(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
