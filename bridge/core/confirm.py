"""Confirmed deletes (``confirm_deletes = N``): an item missing from a complete list is deleted
only once it has been missing from N consecutive successful polls.

List endpoints backed by eventually consistent search indexes let items blink out for a poll.
Each poll counts, per key, how many polls in a row the key has been missing; a key that comes
back loses its count (and, as its snapshot was kept, emits nothing unless it changed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DeleteConfirmation:
    """Which missing keys are deleted now, and the counts of those still pending."""

    confirmed: list[str]
    """Missing from ``confirm_deletes`` polls in a row: deleted by this poll (sorted)."""
    pending: dict[str, int]
    """Key -> consecutive polls missing so far, for keys not yet confirmed."""


def confirm_missing(
    missing_before: Mapping[str, int], missing_now: Sequence[str], confirm_deletes: int
) -> DeleteConfirmation:
    """Count this poll's missing keys on top of ``missing_before`` (the stored counts).

    A key in ``missing_before`` that is not missing now came back: its count is dropped.
    """
    confirmed: list[str] = []
    pending: dict[str, int] = {}
    for key in missing_now:
        polls = missing_before.get(key, 0) + 1
        if polls >= confirm_deletes:
            confirmed.append(key)
        else:
            pending[key] = polls
    return DeleteConfirmation(sorted(confirmed), pending)
