"""Row <-> model conversions shared by the SQLite and PostgreSQL stores.

The backends differ only in how a time comes back (ISO text or a timestamptz), so each mapper
takes that conversion as ``to_time``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.models import Event, ItemKey, ListenerState, SourceState
from bridge.store.base import DeliveryInfo, DeliveryQuery, EventQuery

ToTime = Callable[[Any], datetime | None]

SOURCE_FIELDS = (
    "last_poll_at",
    "last_success_at",
    "last_result",
    "last_error",
    "last_duration_s",
    "item_count",
    "fingerprint",
    "consecutive_failures",
    "not_before",
    "held_reason",
    "held_polls",
    "held_digest",
    "validators",
    "accept_requested",
    "cursor",
    "reconciled_at",
)
"""The source-state columns ``update_source_state`` may set."""


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def key_json(key: ItemKey) -> str:
    """The stored JSON of a key: a string, or an array for a composite key."""
    return dumps(key if isinstance(key, str) else list(key))


def key_from_json(text: str) -> ItemKey:
    value = orjson.loads(text)
    return value if isinstance(value, str) else tuple(value)


def _required(to_time: ToTime, value: Any) -> datetime:
    moment = to_time(value)
    if moment is None:
        raise ValueError("a required time column is NULL")
    return moment


def event_from_row(row: Mapping[str, Any], to_time: ToTime) -> Event:
    return Event(
        id=row["id"],
        seq=row["seq"],
        source=row["source"],
        key=key_from_json(row["key"]),
        type=row["type"],
        timestamp=_required(to_time, row["timestamp"]),
        before=loads(row["before"]),
        after=loads(row["after"]),
        changes=orjson.loads(row["changes"]),
        # queries that join other tables may leave the column out
        name=row["type_name"] if "type_name" in row.keys() else None,  # noqa: SIM118
    )


def source_from_row(row: Mapping[str, Any], to_time: ToTime) -> SourceState:
    return SourceState(
        name=row["name"],
        last_poll_at=to_time(row["last_poll_at"]),
        last_success_at=to_time(row["last_success_at"]),
        last_result=row["last_result"],
        last_error=row["last_error"],
        last_duration_s=row["last_duration_s"],
        item_count=row["item_count"],
        fingerprint=row["fingerprint"],
        consecutive_failures=row["consecutive_failures"],
        not_before=to_time(row["not_before"]),
        held_reason=row["held_reason"],
        held_polls=row["held_polls"],
        held_digest=row["held_digest"],
        validators=loads(row["validators"]) or {},
        accept_requested=bool(row["accept_requested"]),
        cursor=row["cursor"],
        reconciled_at=to_time(row["reconciled_at"]),
    )


def delivery_info_from_row(r: Mapping[str, Any], to_time: ToTime) -> DeliveryInfo:
    return DeliveryInfo(
        id=r["id"],
        event_id=r["event_id"],
        listener=r["listener"],
        source=r["source"],
        key_text=r["key_text"],
        type=r["type"],
        state=r["state"],
        attempts=r["attempts"],
        next_at=(datetime.fromtimestamp(r["next_at"], UTC) if r["state"] == "pending" else None),
        created_at=_required(to_time, r["created_at"]),
        updated_at=_required(to_time, r["updated_at"]),
        delivered_at=to_time(r["delivered_at"]),
        last_status=r["last_status"],
        last_error=r["last_error"],
        last_response=r["last_response"],
    )


def listener_states(
    counts: Mapping[str, Mapping[str, int]],
    rows: Mapping[str, Mapping[str, Any]],
    to_time: ToTime,
) -> list[ListenerState]:
    """Every listener that has deliveries or a ``listeners`` row, by name.

    ``counts`` maps listener -> state -> number of deliveries; ``rows`` the ``listeners`` rows.
    """
    out = []
    for name in sorted(set(counts) | set(rows)):
        r = rows.get(name)
        c = counts.get(name, {})
        out.append(
            ListenerState(
                name=name,
                paused=bool(r["paused"]) if r else False,
                paused_reason=r["paused_reason"] if r else None,
                pending=c.get("pending", 0),
                dead=c.get("dead", 0),
                delivered=c.get("delivered", 0),
                last_success_at=to_time(r["last_success_at"]) if r else None,
                last_failure_at=to_time(r["last_failure_at"]) if r else None,
                last_error=r["last_error"] if r else None,
                failing_since=to_time(r["failing_since"]) if r else None,
            )
        )
    return out


Filter = tuple[str, str, str, Any]
"""One bound condition of an inspection query: (column, operator, parameter name, value)."""


def event_filters(query: EventQuery) -> list[Filter]:
    """The conditions ``list_events`` applies, whatever the backend's placeholder style."""
    wanted = [
        ("e.source", "=", "source", query.source),
        ("e.key_text", "=", "key", query.key),
        # an append source's named events are of their name, not of "created"
        ("COALESCE(e.type_name, e.type)", "=", "type", query.type),
        ("e.timestamp", ">=", "since", query.since),
    ]
    return [f for f in wanted if f[3] is not None]


def delivery_filters(query: DeliveryQuery) -> list[Filter]:
    """The conditions ``list_deliveries`` applies, whatever the backend's placeholder style."""
    wanted = [
        ("d.listener", "=", "listener", query.listener),
        ("d.state", "=", "state", query.state),
        ("e.id", "=", "event_id", query.event_id),
        ("d.updated_at", ">=", "since", query.since),
    ]
    return [f for f in wanted if f[3] is not None]
