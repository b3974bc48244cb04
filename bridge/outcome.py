"""What one poll did (:class:`PollOutcome`) and what each of its steps knows (:class:`PollContext`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.config import SourceConfig
from bridge.incremental import IncrementalPoll
from bridge.models import Change, Event, SourceState


@dataclass
class PollOutcome:
    """What a poll did, for logs, the CLI and metrics."""

    source: str
    ok: bool
    result: str
    """ok | unchanged | baseline | rebaseline | held | error"""
    duration_s: float
    item_count: int = 0
    changes: list[Change] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    error: str | None = None
    committed: bool = False
    pages: int = 0
    """Requests made for the list (a 304 page counts)."""
    detail_fetches: int = 0
    """Detail requests made ([sources.detail]): one per new or changed list entry."""
    not_modified: bool = False
    """Every page answered 304 Not Modified."""
    held: str | None = None
    """Why the poll was held (result ``held``) or why a held result was applied."""
    held_polls: int = 0
    not_before: datetime | None = None
    """After a failure: the source is not polled again before this time (backoff, Retry-After)."""
    pending_deletes: dict[str, int] = field(default_factory=dict)
    """``confirm_deletes``: missing items not deleted yet -> polls missing so far."""
    remembered: int | None = None
    """An append source: the keys remembered once this poll is recorded."""
    stopped: bool = False
    """An append source's walk stopped at a page holding a seen key (``stop_at_seen``)."""
    asked: str | None = None
    """An incremental source: what the poll asked for (a window since a cursor, or the list)."""
    cursor_sent: str | None = None
    cursor: str | None = None
    """An incremental source: the cursor stored (or, in a dry run, that would be stored)."""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PollContext:
    """What every step of one poll needs to know."""

    source: SourceConfig
    state: SourceState | None
    now: datetime
    started: float
    fingerprint: str
    commit: bool
    validators: dict[str, dict[str, str]]
    """The validators to store with this poll's result."""
    requests: int
    incremental: IncrementalPoll | None = None
    cursor: str | None = None
    """An incremental source's cursor to store with this poll's result."""
    reconciled_at: datetime | None = None
    lease_token: int | None = None
    """Fences the commit: refused if the source's lease moved meanwhile."""


def annotated(outcome: PollOutcome, ctx: PollContext) -> PollOutcome:
    """``outcome`` with what an incremental poll asked for and the cursor it stores."""
    inc = ctx.incremental
    if inc is not None:
        outcome.asked = inc.describe()
        outcome.cursor_sent = inc.sent
        outcome.cursor = ctx.cursor
    return outcome


def describe_outcome(outcome: PollOutcome) -> dict[str, Any]:
    """Fields for one log line about a poll."""
    counts = {"created": 0, "updated": 0, "deleted": 0}
    for c in outcome.changes:
        counts[c.type] += 1
    return {
        "source": outcome.source,
        "result": outcome.result,
        "items": outcome.item_count,
        "duration_ms": round(outcome.duration_s * 1000, 1),
        **counts,
    }
