"""Plain data passed between the core and the shells. No I/O, no project imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

JSON: TypeAlias = Any
"""A value decoded from JSON: dict, list, str, int, float, bool or None."""

ChangeType = Literal["created", "updated", "deleted"]
CHANGE_TYPES: tuple[ChangeType, ...] = ("created", "updated", "deleted")

ItemKey: TypeAlias = str | tuple[str, ...]
"""An item's key as sent in events: a string, or a tuple of strings for a composite key."""


@dataclass(frozen=True, slots=True)
class Item:
    """One extracted item with its key and the canonical hash of its compared part."""

    key: ItemKey
    key_text: str
    value: JSON
    hash: str
    list_hash: str | None = None
    """Detail sources: the hash of the item's list entry (its value and hash are the detail)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One detected difference between the stored snapshot and a new poll."""

    type: ChangeType
    key: ItemKey
    key_text: str
    before: JSON
    after: JSON
    changes: list[dict[str, Any]]
    hash: str | None
    """The new hash of the item; None for a deletion."""
    name: str | None = None
    """The event type's name when it is not ``item.<type>`` (an append source's
    ``event_type``, e.g. ``github.event``)."""


@dataclass(frozen=True, slots=True)
class Event:
    """A committed change: what a listener receives."""

    id: str
    seq: int
    source: str
    key: ItemKey
    type: ChangeType
    timestamp: datetime
    before: JSON
    after: JSON
    changes: list[dict[str, Any]]
    name: str | None = None
    """The event type's name when it is not ``item.<type>`` (see :func:`event_type_name`)."""


def event_type_name(change_type: ChangeType, name: str | None = None) -> str:
    """What payloads call an event's type: ``item.created`` unless the source names it."""
    return name if name is not None else f"item.{change_type}"


DeliveryState = Literal["pending", "delivered", "dead", "coalesced"]
"""``coalesced``: merged with later updates of the same key into a newer delivery."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One (event, listener) pair waiting to be sent, with its attempt count so far."""

    id: int
    listener: str
    event: Event
    attempts: int
    next_at: float
    """Unix seconds of the earliest next attempt."""


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one HTTP delivery attempt produced."""

    ok: bool
    status: int | None
    duration_s: float
    error: str | None = None
    response_excerpt: str | None = None
    retryable: bool = True
    retry_after_s: float | None = None
    gone: bool = False
    """The listener answered 410 Gone: pause it."""
    sent: bool = True
    """False when nothing reached the network (the body could not be built): such a failure
    says nothing about the receiver, so it moves neither the circuit breaker nor auto-disable."""


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the store remembers about a source between polls."""

    name: str
    last_poll_at: datetime | None = None
    last_success_at: datetime | None = None
    last_result: str | None = None
    last_error: str | None = None
    last_duration_s: float | None = None
    item_count: int = 0
    fingerprint: str | None = None
    consecutive_failures: int = 0
    not_before: datetime | None = None
    held_reason: str | None = None
    held_polls: int = 0
    held_digest: str | None = None
    validators: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per page URL: the ETag / Last-Modified values last seen, and the next page's URL."""
    accept_requested: bool = False
    """The operator ran ``pollbridge accept``: apply the held result at the next poll."""
    cursor: str | None = None
    """An incremental source's cursor: the greatest cursor value seen (ISO 8601, UTC)."""
    reconciled_at: datetime | None = None
    """When an incremental source last read its complete list (baseline or reconcile)."""


@dataclass(frozen=True, slots=True)
class ListenerState:
    """What the store remembers about a listener."""

    name: str
    paused: bool = False
    paused_reason: str | None = None
    pending: int = 0
    dead: int = 0
    delivered: int = 0
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None
    failing_since: datetime | None = None
    """The first failed attempt since the last success (None after a success)."""
