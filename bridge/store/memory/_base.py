"""The memory store's tables (plain dicts and rows) and what every role of it shares."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.errors import StoreError
from bridge.models import Event, ItemKey
from bridge.store.base import Access, AttemptInfo


def copy(value: Any) -> Any:
    """A deep copy through JSON: what a database hands back is never the caller's object."""
    return orjson.loads(orjson.dumps(value))


def utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


def copy_event(event: Event) -> Event:
    return replace(
        event,
        before=copy(event.before),
        after=copy(event.after),
        changes=copy(event.changes),
    )


@dataclass
class StoredDelivery:
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
class StoredItem:
    key: ItemKey
    hash: str
    value: bytes
    list_hash: str | None = None


_LISTENER_COLUMNS = (
    "paused",
    "paused_reason",
    "paused_at",
    "last_success_at",
    "last_failure_at",
    "last_error",
    "failing_since",
)


class MemoryBase:
    """The tables; a call is atomic because nothing in one awaits."""

    def __init__(self, *, access: Access = "daemon"):
        self.location = "memory:"
        self.access: Access = access
        self._open = False
        self._sources: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, int] = {}
        self._items: dict[str, dict[str, StoredItem]] = {}
        self._seen: dict[str, dict[str, datetime]] = {}
        """Append sources: key text -> first seen."""
        self._missing: dict[str, dict[str, int]] = {}
        """confirm_deletes: key text -> consecutive polls missing."""
        self._events: dict[int, Event] = {}
        self._event_keys: dict[int, str] = {}
        """Event seq -> the stored key text (what ``EventQuery.key`` names)."""
        self._deliveries: dict[int, StoredDelivery] = {}
        self._attempts: list[tuple[int, AttemptInfo]] = []
        self._listeners: dict[str, dict[str, Any]] = {}
        self._runtime: bytes | None = None
        self._control = 0
        self._next_seq = 1
        self._next_delivery = 1

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("use", "the store is not open", location=self.location)

    async def location_problem(self) -> str | None:
        return None  # nothing on disk to lose

    def oldest_call_s(self) -> float:
        """Calls never wait here."""
        return 0.0

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _add_delivery(
        self, seq: int, listener: str, source: str, key_text: str, at: datetime
    ) -> StoredDelivery:
        delivery = StoredDelivery(
            self._next_delivery, seq, listener, source, key_text, at.timestamp(), at, at
        )
        self._deliveries[delivery.id] = delivery
        self._next_delivery += 1
        return delivery

    def _pending(self, listeners: Iterable[str] | None = None) -> list[StoredDelivery]:
        wanted = None if listeners is None else set(listeners)
        return [
            d
            for d in self._deliveries.values()
            if d.state == "pending" and (wanted is None or d.listener in wanted)
        ]

    def _touch_listener(self, listener: str, values: Mapping[str, Any]) -> None:
        row = self._listeners.setdefault(listener, dict.fromkeys(_LISTENER_COLUMNS))
        row.setdefault("name", listener)
        row.update(values)


def copy_field(name: str, value: Any) -> Any:
    """A source-state value as stored: times in UTC, validators copied, flags as bools."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if name == "validators":
        return copy(value) if value is not None else {}
    if name == "accept_requested":
        return bool(value)
    return value


def required(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
