"""Event identifiers: ``evt_`` + a ULID (unique, URL-safe, sortable by time)."""

from __future__ import annotations

from datetime import datetime

from ulid import ULID


def new_event_id(moment: datetime) -> str:
    """A new event id whose time part is ``moment``."""
    return "evt_" + str(ULID.from_datetime(moment))
