"""The storage interface, by role. Backends: ``sqlite`` (embedded default), ``postgres``
(shared) and ``memory`` (tests and dry runs); :func:`bridge.store.open_store` picks one.

Several pollbridge instances may share one PostgreSQL store. They coordinate through it alone:
a lease per source (one poller per source, fenced commits) and claimed deliveries (one sender per
attempt). A single-instance backend implements those calls trivially: it always owns everything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from bridge.errors import LeaseLost, StaleSnapshot, StoreError
from bridge.models import (
    AttemptResult,
    Change,
    Delivery,
    Event,
    Item,
    ItemKey,
    ListenerState,
    SourceState,
)

SCHEMA_VERSION = 8
"""The schema version of every SQL backend (SQLite's ``user_version``, PostgreSQL's
``schema_version`` table): one migration per version in each backend."""

Access = Literal["daemon", "read", "write"]
"""How a store is opened. ``daemon``: create and migrate the state as needed. ``read`` and
``write`` (the CLI, possibly beside a running daemon): the state must already exist at the
current schema version; nothing is created or migrated, and ``read`` never writes."""


class AttemptRecord(NamedTuple):
    """One finished attempt to record: what :meth:`DeliveryQueue.record_attempt` takes."""

    delivery_id: int
    at: datetime
    result: AttemptResult
    next_at: float | None


@dataclass(frozen=True)
class PollCommit:
    """Everything one successful poll writes, committed in a single transaction."""

    source: str
    polled_at: datetime
    duration_s: float
    upserts: Sequence[Item]
    """Created and updated items (the whole list on a baseline); an item's ``list_hash`` is
    stored with it (detail sources)."""
    deletes: Sequence[str]
    """Key texts of deleted items."""
    changes: Sequence[Change]
    """The changes recorded as events (empty for a silent baseline)."""
    routes: Sequence[Sequence[str]]
    """For each change, the listeners that get a delivery."""
    item_count: int
    fingerprint: str
    result: str = "ok"
    validators: Mapping[str, Mapping[str, str]] | None = None
    expected_version: int | None = None
    """The snapshot version the diff was computed against; a mismatch refuses the commit."""
    lease_token: int | None = None
    """The fencing token of the source lease the poll ran under; a lost lease refuses the commit."""
    seen: SeenUpdate | None = None
    """An append source's remembered keys: those first seen now and those forgotten. None for
    any other source: keys it remembered as an append source (before a change of mode) go."""
    missing: Mapping[str, int] | None = None
    """``confirm_deletes``: key text -> consecutive polls the item has been missing, for the
    items whose deletion is still pending. Replaces the source's stored counts (None: none)."""
    cursor: str | None = None
    """An incremental source's new cursor, stored with the snapshot (None for other sources)."""
    reconciled_at: datetime | None = None
    """When an incremental source last read its complete list (None for other sources)."""


@dataclass(frozen=True)
class SeenUpdate:
    """How one poll changes an append source's remembered keys, first seen at ``polled_at``."""

    add: Sequence[str] = ()
    forget: Sequence[str] = ()


@dataclass(frozen=True)
class SeenKeys:
    """An append source's remembered keys (key text -> first seen) and the snapshot version
    they belong to (an append commit bumps it like any other)."""

    version: int
    first_seen: dict[str, datetime]
    """Oldest first."""


@dataclass(frozen=True)
class TrackedCounts:
    """What a source remembers besides its snapshot, for ``status``."""

    seen_keys: int = 0
    """Keys an append source remembers."""
    pending_deletes: int = 0
    """Items missing from the list whose deletion waits for ``confirm_deletes``."""


@dataclass(frozen=True)
class SnapshotHashes:
    """A source's stored (key text -> hash) map and the version it belongs to."""

    version: int
    hashes: dict[str, str]
    list_hashes: dict[str, str] | None = None
    """Detail sources: key text -> the hash of the item's list entry (loaded when asked for)."""


MergeUpdates = Callable[[Sequence[Event]], list[dict[str, Any]] | None]
"""Given consecutive ``updated`` events of one key, the net RFC 6902 patch, or None if none."""


@dataclass(frozen=True)
class EventQuery:
    """A filter over the event log (``pollbridge events``); newest ``limit`` events match."""

    source: str | None = None
    key: str | None = None
    """The stored key text: the key itself, or a JSON array for a composite key."""
    type: str | None = None
    """``created``, ``updated``, ``deleted``, or an append source's ``event_type`` (events of
    that name only: they are not ``created`` here)."""
    since: datetime | None = None
    limit: int = 50


@dataclass(frozen=True)
class EventRecord:
    """An event with the state of each of its deliveries (listener -> state)."""

    event: Event
    deliveries: Mapping[str, str]


@dataclass(frozen=True)
class DeliveryQuery:
    """A filter over deliveries (``pollbridge deliveries`` and ``show``)."""

    listener: str | None = None
    state: str | None = None
    event_id: str | None = None
    since: datetime | None = None
    """Last changed at or after this time."""
    limit: int = 50


@dataclass(frozen=True)
class DeliveryInfo:
    """One delivery as an operator sees it."""

    id: int
    event_id: str
    listener: str
    source: str
    key_text: str
    type: str
    state: str
    attempts: int
    next_at: datetime | None
    """When the next attempt is due (pending deliveries only)."""
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None
    last_response: str | None


@dataclass(frozen=True)
class AttemptInfo:
    """One recorded HTTP attempt of a delivery."""

    at: datetime
    status: int | None
    duration_ms: float
    error: str | None
    response: str | None


@dataclass(frozen=True)
class ReplayRequest:
    """Which deliveries ``pollbridge replay`` queues again: by event id, or every dead one."""

    event_ids: Sequence[str] = ()
    dead: bool = False
    listener: str | None = None
    since: datetime | None = None
    """With ``dead``: only deliveries that died at or after this time."""


@dataclass(frozen=True)
class ReplayResult:
    requeued: int
    unknown_event_ids: Sequence[str] = ()


@dataclass(frozen=True)
class PruneResult:
    events: int = 0
    deliveries: int = 0
    attempts: int = 0


@dataclass(frozen=True)
class InstanceInfo:
    """Who a running pollbridge process is, as other instances and ``pollbridge leases`` see it."""

    id: str
    host: str
    pid: int
    started_at: datetime


@dataclass(frozen=True)
class Heartbeat:
    """What a heartbeat learnt: how many instances are alive and which leases are still ours."""

    live_instances: int
    tokens: dict[str, int]
    """Source -> fencing token of every lease the heartbeat renewed."""


@dataclass(frozen=True)
class InstanceStatus:
    """One instance as the store knows it, with what it owns right now."""

    id: str
    host: str
    pid: int
    started_at: datetime
    last_seen: datetime
    alive: bool
    sources: tuple[str, ...]
    claimed_deliveries: int


@dataclass(frozen=True)
class LeaseInfo:
    """One source's lease row, as the store has it (the store's clock)."""

    source: str
    owner: str | None
    """The instance that last acquired it (None once released)."""
    acquired_at: datetime
    expires_at: datetime
    """In the past when released, given back on leaving, or its owner stopped renewing it."""


@dataclass(frozen=True)
class OwnersReport:
    """Which instance owns what (empty for a single-instance store)."""

    instances: list[InstanceStatus]
    unowned_sources: list[str]
    """Sources with a lease that no live instance holds (they are taken at the next tick)."""
    leases: list[LeaseInfo] = field(default_factory=list)
    """Every source's lease, live or not, by source name."""


class SnapshotStore(Protocol):
    """Sources and their snapshots: what the pipeline reads before a poll and commits after."""

    async def get_source_state(self, source: str) -> SourceState | None: ...
    async def list_source_states(self) -> list[SourceState]: ...
    async def load_hashes(self, source: str, *, list_hashes: bool = False) -> SnapshotHashes:
        """The snapshot's hashes; with ``list_hashes`` also the stored list-entry hashes."""
        ...

    async def snapshot_version(self, source: str) -> int: ...
    async def load_items(
        self, source: str, key_texts: Sequence[str]
    ) -> dict[str, tuple[ItemKey, Any]]: ...
    async def load_seen(self, source: str) -> SeenKeys:
        """An append source's remembered keys with when each was first seen, oldest first
        (ties by key)."""
        ...

    async def load_missing(self, source: str) -> dict[str, int]:
        """``confirm_deletes``: key text -> consecutive polls missing, for pending deletions."""
        ...

    async def commit_poll(self, commit: PollCommit) -> list[Event]:
        """Write the poll in one transaction; :class:`StaleSnapshot` (nothing written) when the
        snapshot moved since ``expected_version``, :class:`LeaseLost` when the lease did."""
        ...

    async def record_poll_failure(
        self,
        source: str,
        at: datetime,
        duration_s: float,
        error: str,
        *,
        result: str = "error",
        not_before: datetime | None = None,
    ) -> SourceState: ...
    async def record_poll_unchanged(
        self,
        source: str,
        at: datetime,
        duration_s: float,
        *,
        result: str = "ok",
        validators: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None: ...
    async def update_source_state(self, source: str, **fields: Any) -> None: ...


class DeliveryQueue(Protocol):
    """The durable delivery queue: what the dispatcher takes, sends and records."""

    async def due_deliveries(
        self, listener: str, now: float, limit: int, exclude_ids: Sequence[int]
    ) -> list[Delivery]: ...
    async def next_due_at(
        self, listeners: Sequence[str], exclude_ids: Sequence[int]
    ) -> float | None: ...
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
        """Like :meth:`due_deliveries`, but each returned delivery is claimed by ``owner`` for
        ``claim_s`` seconds: no other instance attempts it (or anything after it on its key)
        until the attempt is recorded or the claim expires.

        The claim is durable before it returns: it records that an attempt started, so even
        if the process dies before the attempt is recorded, the delivery is known to have
        possibly reached the receiver and is never coalesced."""
        ...

    async def release_claims(self, delivery_ids: Sequence[int], *, owner: str) -> None:
        """Give back deliveries ``owner`` claimed but did not attempt: due again at once, with
        no attempt used up (their listener's breaker opened before they could start); as
        nothing was sent, they may be coalesced again."""
        ...

    async def record_attempt(
        self,
        delivery_id: int,
        at: datetime,
        result: AttemptResult,
        *,
        next_at: float | None,
    ) -> str: ...
    async def record_attempts(self, attempts: Sequence[AttemptRecord]) -> list[str | StoreError]:
        """Record several attempts; each ends as if recorded alone, in the order given (a shared
        backend may record those of different deliveries at once, as concurrent senders would).
        Per attempt: the delivery's state after it, or the :class:`StoreError` that kept it from
        being recorded (one bad attempt does not fail the others); another exception is a bug,
        and raised."""
        ...

    async def pending_count(self, listeners: Sequence[str] | None = None) -> int: ...
    async def coalesce_pending(
        self,
        listener: str,
        at: datetime,
        exclude_ids: Sequence[int],
        merge: MergeUpdates,
    ) -> int:
        """Collapse each key's trailing run of never-claimed ``updated`` deliveries into one.

        For every (source, key) of ``listener`` whose pending chain ends in two or more
        ``updated`` deliveries that were never attempted nor claimed and are not in
        ``exclude_ids`` (:func:`bridge.core.queue_rules.coalescible_tail`), in one
        transaction: ``merge(events)`` gives the net patch; a new ``updated`` event (new id, the
        first event's ``before``, the last one's ``after``, the last one's timestamp) and a
        pending delivery for it are written, and the run's deliveries become ``coalesced``
        (``coalesced_into`` the new delivery). When ``merge`` returns None (no net change) the
        run is marked ``coalesced`` and nothing replaces it. Returns by how many the listener's
        pending deliveries went down.
        """
        ...

    async def watch_deliveries(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever another instance may have made deliveries due; run until
        cancelled (returns at once when no other instance can share the store)."""
        ...


class Coordination(Protocol):
    """Instances, leases and the daemon's own records (several instances on one store; a
    single-instance backend implements the lease calls trivially: it owns everything)."""

    async def heartbeat(
        self, instance: InstanceInfo, held: Sequence[str], ttl_s: float
    ) -> Heartbeat:
        """Say ``instance`` is alive for ``ttl_s`` and renew its leases on ``held`` sources."""
        ...

    async def acquire_source_lease(
        self, source: str, owner: str, ttl_s: float, *, orphans_only: bool = False
    ) -> int | None:
        """Take (or renew) the lease on ``source``; its fencing token, or None if another live
        instance holds it. ``orphans_only``: take only leases whose owner stopped renewing or
        left, not those released to balance the load."""
        ...

    async def release_source_leases(self, owner: str, sources: Sequence[str]) -> None: ...
    async def leave(self, owner: str) -> None:
        """A clean stop: give up every lease and unattempted claim of ``owner`` at once."""
        ...

    async def write_runtime(self, status: Mapping[str, Any]) -> None:
        """Replace the daemon's runtime status (a JSON object); also proves the store writable."""
        ...

    async def control_version(self) -> int:
        """A counter bumped by every operator action the daemon must notice (resume, replay)."""
        ...


class Inspection(Protocol):
    """What ``status``, ``events``, ``deliveries``, ``show`` and ``leases`` read."""

    async def list_source_states(self) -> list[SourceState]: ...
    async def list_listener_states(self) -> list[ListenerState]: ...
    async def read_runtime(self) -> dict[str, Any] | None: ...
    async def list_owners(self) -> OwnersReport: ...
    async def list_events(self, query: EventQuery) -> list[EventRecord]: ...
    async def get_event(self, event_id: str) -> Event | None: ...
    async def list_deliveries(self, query: DeliveryQuery) -> list[DeliveryInfo]: ...
    async def list_attempts(self, delivery_id: int) -> list[AttemptInfo]: ...
    async def delivery_counts(self, states: Sequence[str]) -> dict[str, dict[str, int]]:
        """listener -> state -> count, for the given states only (cheap for pending/dead)."""
        ...

    async def tracked_counts(self) -> dict[str, TrackedCounts]:
        """Source -> its remembered keys and pending deletions (sources with either only)."""
        ...


class Operations(Protocol):
    """What operators change through the CLI (and the daemon's auto-disable and retention)."""

    async def set_listener_paused(
        self, listener: str, paused: bool, reason: str | None, at: datetime
    ) -> None:
        """Pause or resume; resuming makes the listener's pending deliveries due at ``at``.
        Bumps :meth:`Coordination.control_version` so a running daemon notices."""
        ...

    async def replay(self, request: ReplayRequest, at: datetime) -> ReplayResult:
        """Queue deliveries again (same event, fresh retry schedule, due at ``at``)."""
        ...

    async def prune(self, before: datetime, *, batch: int = 5000) -> PruneResult:
        """Delete finished deliveries (delivered or dead) last changed before ``before``, their
        attempts, and events older than ``before`` that no delivery refers to any more.
        Snapshots (items) and pending deliveries are never pruned."""
        ...


class Store(SnapshotStore, DeliveryQueue, Coordination, Inspection, Operations, Protocol):
    """Every role at once, for the callers that need them all (the daemon, the CLI)."""

    location: str
    """Where the state is, safe to print (a PostgreSQL password is redacted)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def oldest_call_s(self) -> float:
        """How long the oldest store call still running has waited, in seconds (0 if none):
        what a health check shows while the store hangs (PostgreSQL calls end by their
        deadline; a SQLite call on a stuck disk may not)."""
        ...

    async def location_problem(self) -> str | None:
        """Why the state at the configured location is no longer the one this store has open
        (its file deleted or replaced while running), or None while all is well."""
        ...


__all__ = [
    "SCHEMA_VERSION",
    "Access",
    "AttemptInfo",
    "Coordination",
    "DeliveryInfo",
    "DeliveryQuery",
    "DeliveryQueue",
    "EventQuery",
    "EventRecord",
    "Heartbeat",
    "Inspection",
    "InstanceInfo",
    "InstanceStatus",
    "LeaseLost",
    "MergeUpdates",
    "Operations",
    "OwnersReport",
    "PollCommit",
    "PruneResult",
    "ReplayRequest",
    "ReplayResult",
    "SeenKeys",
    "SeenUpdate",
    "SnapshotHashes",
    "SnapshotStore",
    "StaleSnapshot",
    "Store",
    "TrackedCounts",
]
