"""The webhook body: the pollbridge envelope documented in docs/events.md."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.models import Event


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a ``Z``: ``2026-11-23T12:00:00.123Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def event_envelope(event: Event) -> dict[str, Any]:
    """The event as the dict that becomes the JSON body."""
    return {
        "id": event.id,
        "type": f"item.{event.type}",
        "timestamp": format_timestamp(event.timestamp),
        "source": event.source,
        "key": event.key if isinstance(event.key, str) else list(event.key),
        "data": {"before": event.before, "after": event.after, "changes": event.changes},
    }


def build_payload(event: Event) -> bytes:
    """The exact bytes POSTed for an event; identical on every retry."""
    return orjson.dumps(event_envelope(event))
