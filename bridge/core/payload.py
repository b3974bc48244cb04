"""The webhook bodies: the pollbridge envelope documented in docs/events.md, and CloudEvents 1.0."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.core.extract import key_text
from bridge.models import Change, Event, ItemKey, event_type_name

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a ``Z``: ``2026-11-23T12:00:00.123Z``."""
    # isoformat is one C call; in UTC it always ends in "+00:00"
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _key_value(key: ItemKey) -> str | list[str]:
    return key if isinstance(key, str) else list(key)


def event_envelope(event: Event) -> dict[str, Any]:
    """The event as the dict that becomes the JSON body."""
    return {
        "id": event.id,
        "type": event_type_name(event.type, event.name),
        "timestamp": format_timestamp(event.timestamp),
        "source": event.source,
        "key": _key_value(event.key),
        "data": {"before": event.before, "after": event.after, "changes": event.changes},
    }


def change_envelope(source: str, change: Change, detected_at: datetime | None) -> dict[str, Any]:
    """The envelope a change will have once committed, without its ``id`` (given at commit)."""
    envelope: dict[str, Any] = {"type": event_type_name(change.type, change.name)}
    if detected_at is not None:
        envelope["timestamp"] = format_timestamp(detected_at)
    envelope.update(
        source=source,
        key=_key_value(change.key),
        data={"before": change.before, "after": change.after, "changes": change.changes},
    )
    return envelope


def build_payload(event: Event) -> bytes:
    """The exact bytes POSTed for an event; identical on every retry."""
    return orjson.dumps(event_envelope(event))


def cloudevent(event: Event) -> dict[str, Any]:
    """The event as a CloudEvents 1.0 structured-mode JSON object.

    ``subject`` is the item's key; a composite key is given as its JSON array text.
    """
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": f"pollbridge/{event.source}",
        "type": f"pollbridge.{event_type_name(event.type, event.name)}",
        "subject": key_text(event.key),
        "time": format_timestamp(event.timestamp),
        "datacontenttype": "application/json",
        "data": {"before": event.before, "after": event.after, "changes": event.changes},
    }


def build_cloudevent(event: Event) -> bytes:
    """The exact bytes POSTed for an event in CloudEvents structured mode."""
    return orjson.dumps(cloudevent(event))
