"""The delivery queue's rules, written once for every store backend.

Backends hold the SQL (or the dicts) that find the rows; these functions decide what the rows
mean: which pending deliveries of a key may be merged, and which state an attempt leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bridge.models import AttemptResult

Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class QueuedEntry:
    """What the coalescing rule needs to know of one pending delivery of a key's chain."""

    delivery_id: int
    event_type: str
    attempts: int
    ever_claimed: bool
    """Claimed for sending at some point: a request may have left, even with ``attempts = 0``
    (the process died before the attempt was recorded)."""
    claimed_now: bool = False
    """Held by a live claim (another instance is sending it right now)."""


def may_coalesce(entry: QueuedEntry, excluded: Collection[int]) -> bool:
    """Whether a pending delivery may be merged into a net update: an ``updated`` delivery the
    receiver cannot have seen (never attempted, never claimed) and not in flight here."""
    return (
        entry.event_type == "updated"
        and entry.attempts == 0
        and not entry.ever_claimed
        and not entry.claimed_now
        and entry.delivery_id not in excluded
    )


def coalescible_tail(
    chain: Sequence[Row], entry_of: Callable[[Row], QueuedEntry], excluded: Collection[int]
) -> list[Row]:
    """The trailing run of ``chain`` (a key's pending deliveries, oldest first) that may be
    merged, oldest first; empty unless at least two.

    Only the tail: the merged event is written last, so it must also be the last of its key.
    """
    run: list[Row] = []
    for row in reversed(chain):
        if not may_coalesce(entry_of(row), excluded):
            break
        run.append(row)
    if len(run) < 2:
        return []
    run.reverse()
    return run


def state_after_attempt(result: AttemptResult, next_at: float | None) -> str:
    """A delivery's state once an attempt is recorded: delivered, pending (a retry is
    scheduled at ``next_at``) or dead (no retry left)."""
    if result.ok:
        return "delivered"
    return "pending" if next_at is not None else "dead"
