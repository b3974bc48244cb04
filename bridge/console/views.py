"""What the console's pages show, built from store records. Pure: no I/O, time passed in.

The ``*_doc`` functions give the documents of the ``?format=json`` twins, in the shapes of
``pollbridge status|events|show|deliveries --json``; the other functions give the rows the
HTML templates draw (with human times such as ``3 min ago``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from bridge.console.sparkline import Buckets, delivery_outcome
from bridge.core.extract import key_text
from bridge.core.payload import event_envelope
from bridge.display import span, stamp
from bridge.models import Event
from bridge.state_view import (
    parse_time,
)
from bridge.store import AttemptInfo, DeliveryInfo

PAGE_ROWS = 200
"""The most rows a page shows; a longer list is paged."""
MAX_PAGES = 10
"""Deeper pages are not offered: narrow the filters (or use the CLI) instead."""


# -- times --------------------------------------------------------------------------------


def _amount(seconds: float) -> str:
    return span(seconds, spaced=True)


def relative(moment: datetime | None, now: datetime) -> str:
    """``3 min ago``, ``in 12 s``, ``just now``; ``-`` for none."""
    if moment is None:
        return "-"
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    return f"{_amount(seconds)} ago" if seconds > 0 else f"in {_amount(-seconds)}"


def took(seconds: float | None) -> str:
    return "-" if seconds is None else _amount(seconds)


# -- the JSON twins (the CLI's --json shapes) ---------------------------------------------


def event_doc(event: Event, deliveries: Any = None) -> dict[str, Any]:
    """An event as ``events --json`` prints it: the webhook envelope (+ ``deliveries``)."""
    doc = event_envelope(event)
    if deliveries is not None:
        doc["deliveries"] = deliveries
    return doc


def delivery_doc(d: DeliveryInfo) -> dict[str, Any]:
    """A delivery as ``deliveries --json`` prints it."""
    return asdict(d)


def show_doc(
    event: Event, deliveries: Sequence[DeliveryInfo], attempts: Mapping[int, Sequence[AttemptInfo]]
) -> dict[str, Any]:
    """``show --json``: the event, each delivery and its ``attempt_history``."""
    doc = event_doc(event)
    doc["deliveries"] = [
        {**delivery_doc(d), "attempt_history": [asdict(a) for a in attempts.get(d.id, ())]}
        for d in deliveries
    ]
    return doc


def to_json(value: Any) -> bytes:
    """The twins' bytes: indented like the CLI's ``--json``, datetimes as RFC 3339."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str) + b"\n"


def redact_tree(value: Any, redact: Callable[[str], str]) -> Any:
    """``value`` with ``redact`` applied to every string in it (keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_tree(k, redact): redact_tree(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v, redact) for v in value]
    return value


# -- the overview -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One source or listener of the overview: its status document and what to draw."""

    doc: Mapping[str, Any]
    state_text: str
    """The state, with its reason where there is one."""
    level: str
    """``ok``, ``warn`` or ``bad``: the colour of the state."""
    activity: Buckets | None = None
    times: Mapping[str, str] = field(default_factory=dict)
    """Human forms of the document's times (``last_poll_at`` -> ``3 min ago``)."""
    notes: tuple[str, ...] = ()
    """What a source keeps besides its items: seen keys, deletions waiting, its cursor."""


def _times(doc: Mapping[str, Any], names: Iterable[str], now: datetime) -> dict[str, str]:
    return {n: relative(parse_time(doc.get(n)), now) for n in names}


def source_row(doc: Mapping[str, Any], activity: Buckets | None, now: datetime) -> Row:
    """A source of ``status_doc`` as the overview draws it."""
    state = doc["state"]
    level = "ok"
    text = state
    if state == "held":
        text, level = f"held: {doc['held_reason']} ({doc['held_polls']} poll(s))", "warn"
    elif state == "backoff":
        until = relative(parse_time(doc["backoff_until"]), now)
        text, level = f"backoff (next poll {until}): {doc['last_error']}", "bad"
    elif state == "failing":
        text = f"failing ({doc['consecutive_failures']}x): {doc['last_error']}"
        level = "bad"
    elif state == "never polled":
        level = "warn"
    if doc.get("configured") is False:
        text += " (not configured)"
    times = _times(doc, ("last_poll_at", "last_success_at", "next_poll_at"), now)
    return Row(doc, text, level, activity, times, _source_notes(doc))


def _source_notes(doc: Mapping[str, Any]) -> tuple[str, ...]:
    notes = []
    if doc.get("seen_keys"):
        notes.append(f"{doc['seen_keys']} seen key(s) remembered")
    if doc.get("pending_deletes"):
        notes.append(f"{doc['pending_deletes']} deletion(s) waiting for confirm_deletes")
    if doc.get("cursor"):
        notes.append(f"cursor {doc['cursor']}")
    return tuple(notes)


def listener_row(doc: Mapping[str, Any], activity: Buckets | None, now: datetime) -> Row:
    """A listener of ``status_doc`` as the overview draws it."""
    state = doc["state"]
    text = state + (f": {doc['paused_reason']}" if doc.get("paused_reason") else "")
    if doc.get("configured") is False:
        text += " (not configured)"
    level = "ok" if state == "active" else "bad" if state in ("paused", "disabled") else "warn"
    if state == "active" and doc.get("dead"):
        level = "warn"
    times = _times(doc, ("last_success_at", "last_failure_at"), now)
    return Row(doc, text, level, activity, times)


def delivery_samples(deliveries: Iterable[DeliveryInfo]) -> list[tuple[datetime, str]]:
    """(last change, outcome) of each delivery, for a listener's sparkline."""
    return [(d.updated_at, delivery_outcome(d.state)) for d in deliveries]


# -- an event -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRow:
    """One leaf of the item, before and after, and whether the event changed it."""

    path: str
    before: str | None
    after: str | None
    changed: bool


def _escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """JSON Pointer -> value of every leaf (an empty object or list is a leaf)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}/{_escape_token(str(k))}"))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(_leaves(v, f"{prefix}/{i}"))
        return out
    return {prefix or "/": value}


def _show(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _touched(path: str, changed: Sequence[str]) -> bool:
    return any(
        path == c or path.startswith(c.rstrip("/") + "/") or c.startswith(path + "/")
        for c in changed
    )


def field_rows(event: Event) -> list[FieldRow]:
    """Before and after side by side, one row per leaf; the rows ``data.changes`` touches
    (and, for a created or deleted item, every row) are marked changed."""
    before = {} if event.before is None else _leaves(event.before)
    after = {} if event.after is None else _leaves(event.after)
    changed = [str(op.get("path", "")) for op in event.changes if isinstance(op, dict)]
    for op in event.changes:
        if isinstance(op, dict) and op.get("from"):
            changed.append(str(op["from"]))
    order = list(before) + [p for p in after if p not in before]
    rows = []
    for path in order:
        b, a = before.get(path, _MISSING), after.get(path, _MISSING)
        if event.type != "updated":
            is_changed = True
        elif changed:
            is_changed = _touched(path, changed)
        else:
            is_changed = b != a
        rows.append(
            FieldRow(
                path,
                None if b is _MISSING else _show(b),
                None if a is _MISSING else _show(a),
                is_changed,
            )
        )
    return rows


_MISSING = object()


@dataclass(frozen=True)
class Page:
    """Which slice of a list a page shows."""

    number: int
    rows: int = PAGE_ROWS

    @property
    def fetch_limit(self) -> int:
        """How many of the newest records to ask the store for (plus one: is there more?)."""
        return self.number * self.rows + 1

    def slice(self, newest_last: Sequence[Any]) -> tuple[list[Any], bool]:
        """This page's records, newest first, and whether an older page exists."""
        newest_first = list(reversed(newest_last))
        start = (self.number - 1) * self.rows
        more = len(newest_first) > start + self.rows and self.number < MAX_PAGES
        return newest_first[start : start + self.rows], more


def page_number(text: str | None) -> int:
    """``?page=N`` clamped to 1..MAX_PAGES (anything unreadable is page 1)."""
    try:
        number = int(text or "1")
    except ValueError:
        return 1
    return min(max(number, 1), MAX_PAGES)


def attempt_rows(attempts: Sequence[AttemptInfo]) -> list[dict[str, Any]]:
    """A delivery's attempts as the event page's table shows them, oldest first."""
    return [
        {
            "at": stamp(a.at),
            "status": "-" if a.status is None else str(a.status),
            "took": f"{a.duration_ms:.0f} ms",
            "error": a.error or "",
            "response": a.response or "",
            "ok": a.status is not None and 200 <= a.status < 300,
        }
        for a in attempts
    ]


def key_label(event: Event) -> str:
    return key_text(event.key)
