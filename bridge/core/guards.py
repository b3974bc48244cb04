"""Safety against bad polls: hold a poll that would delete too much until it is confirmed.

An API that answers with a half-empty list (an outage, a permission change, a bug) must not
turn into a storm of ``deleted`` events. Such a poll is *held*: nothing is written but the
hold itself, and the same result must be seen on several consecutive polls, or accepted by
the operator, before it is applied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bridge.core.hashing import hash_value

MIN_GUARDED_SNAPSHOT = 10
"""The guard applies once the stored snapshot has at least this many items."""

_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class DeleteLimit:
    """``max_deletes``: a share of the snapshot (``percent``) or an absolute ``count``."""

    percent: float | None = None
    count: int | None = None

    def allowed(self, snapshot_size: int) -> float:
        """How many deletions one poll may make against a snapshot of this size."""
        if self.percent is not None:
            return snapshot_size * self.percent / 100.0
        assert self.count is not None  # noqa: S101 - one of the two is always set
        return float(self.count)

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        return str(self.count)


def parse_delete_limit(value: str | int) -> DeleteLimit:
    """Parse ``"50%"`` or ``25`` (or ``"25"``); raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f'expected a percentage such as "50%" or a count, got {value!r}')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a count of deletions cannot be negative, got {value}")
        return DeleteLimit(count=value)
    m = _LIMIT.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(
            f'expected a percentage such as "50%" or a count such as 25, got {value!r}'
        )
    number, percent = m.group(1), m.group(2)
    if percent:
        share = float(number)
        if share > 100:
            raise ValueError(f"a percentage of deletions cannot exceed 100%, got {value!r}")
        return DeleteLimit(percent=share)
    if "." in number:
        raise ValueError(f"a count of deletions must be a whole number, got {value!r}")
    return DeleteLimit(count=int(number))


def excessive_deletes(snapshot_size: int, deletes: int, limit: DeleteLimit) -> str | None:
    """Why a poll deleting ``deletes`` of ``snapshot_size`` items must be held, or None."""
    if snapshot_size < MIN_GUARDED_SNAPSHOT or deletes <= limit.allowed(snapshot_size):
        return None
    return f"would delete {deletes} of {snapshot_size} items, more than max_deletes = {limit}"


def deletion_digest(deleted_keys: Sequence[str]) -> str:
    """Identifies a held result by the keys it would delete, whatever else changed meanwhile."""
    return hash_value(sorted(deleted_keys))


GuardAction = Literal["proceed", "hold", "confirmed", "accepted"]


@dataclass(frozen=True)
class GuardDecision:
    """What to do with a poll: apply it, hold it (for the ``held_polls``-th time), or apply it
    because it was confirmed by repetition or accepted by the operator."""

    action: GuardAction
    held_polls: int = 0
    digest: str | None = None


def decide_hold(
    reason: str | None,
    digest: str,
    *,
    held_digest: str | None,
    held_polls: int,
    confirm_polls: int,
    accept_requested: bool,
) -> GuardDecision:
    """Hold a suspicious poll until ``confirm_polls`` consecutive polls agree, or it is accepted.

    ``held_digest``/``held_polls`` are the source's current hold; a different result starts
    the count again at one.
    """
    if reason is None:
        return GuardDecision("proceed")
    if accept_requested:
        return GuardDecision("accepted", digest=digest)
    seen = held_polls + 1 if held_digest == digest else 1
    if seen >= confirm_polls:
        return GuardDecision("confirmed", seen, digest)
    return GuardDecision("hold", seen, digest)
