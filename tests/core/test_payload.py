"""The webhook envelope and its exact bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from bridge.core.payload import build_payload, event_envelope, format_timestamp
from bridge.models import Event, ItemKey

MOMENT = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)


def make_event(key: ItemKey = "42", type_: str = "updated") -> Event:
    return Event(
        id="evt_01JD0000000000000000000000",
        seq=7,
        source="orders",
        key=key,
        type=type_,  # type: ignore[arg-type]
        timestamp=MOMENT,
        before={"id": 42, "status": "open"},
        after={"id": 42, "status": "paid"},
        changes=[{"op": "replace", "path": "/status", "value": "paid"}],
    )


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (MOMENT, "2026-11-23T12:00:00.123Z"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC), "2026-01-02T03:04:05.999Z"),
        (
            datetime(2026, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))),
            "2025-12-31T23:30:00.000Z",
        ),
        (
            datetime(2026, 6, 1, 0, 0, 0, 5000, tzinfo=timezone(timedelta(hours=-5))),
            "2026-06-01T05:00:00.005Z",
        ),
    ],
)
def test_format_timestamp_is_rfc3339_utc_millis(moment: datetime, expected: str) -> None:
    """Times render in UTC with exactly three fraction digits (truncated) and a Z."""
    assert format_timestamp(moment) == expected


@pytest.mark.parametrize("type_", ["created", "updated", "deleted"])
def test_envelope_fields(type_: str) -> None:
    """The envelope carries id, item.<type>, timestamp, source, key and before/after/changes."""
    event = make_event(type_=type_)
    assert event_envelope(event) == {
        "id": "evt_01JD0000000000000000000000",
        "type": f"item.{type_}",
        "timestamp": "2026-11-23T12:00:00.123Z",
        "source": "orders",
        "key": "42",
        "data": {
            "before": {"id": 42, "status": "open"},
            "after": {"id": 42, "status": "paid"},
            "changes": [{"op": "replace", "path": "/status", "value": "paid"}],
        },
    }


def test_composite_key_is_a_json_array() -> None:
    """A tuple key is sent as a JSON array of strings."""
    body = orjson.loads(build_payload(make_event(key=("org", "7"))))
    assert body["key"] == ["org", "7"]


def test_payload_is_the_envelope_as_compact_json() -> None:
    """The POSTed bytes decode to the envelope and contain no whitespace padding."""
    event = make_event()
    body = build_payload(event)
    assert orjson.loads(body) == event_envelope(event)
    assert b": " not in body
    assert b", " not in body


def test_payload_bytes_are_identical_on_every_call() -> None:
    """A retried event is sent with exactly the same bytes, so its signature matches."""
    assert build_payload(make_event()) == build_payload(make_event())
    assert build_payload(make_event()).startswith(b'{"id":"evt_')
