"""What a poll's outcome does to its source's stored state, written once for every backend.

Each function returns the source-state columns to write (column -> value, times as aware
datetimes, ``validators`` as a mapping); a backend only converts the values to its types.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


def after_commit(
    *,
    polled_at: datetime,
    duration_s: float,
    result: str,
    item_count: int,
    fingerprint: str,
    snapshot_version: int,
    validators: Mapping[str, Mapping[str, str]] | None,
    cursor: str | None = None,
    reconciled_at: datetime | None = None,
) -> dict[str, Any]:
    """A poll whose changes were committed: success recorded, the failure streak, any backoff
    and any hold (with a pending ``accept``) are over, the snapshot moved to a new version."""
    fields: dict[str, Any] = {
        "last_poll_at": polled_at,
        "last_success_at": polled_at,
        "last_result": result,
        "last_error": None,
        "last_duration_s": duration_s,
        "item_count": item_count,
        "fingerprint": fingerprint,
        "consecutive_failures": 0,
        "not_before": None,
        "held_reason": None,
        "held_polls": 0,
        "held_digest": None,
        "accept_requested": False,
        "snapshot_version": snapshot_version,
        "cursor": cursor,
        "reconciled_at": reconciled_at,
    }
    if validators is not None:
        fields["validators"] = validators
    return fields


def after_unchanged(
    *,
    at: datetime,
    duration_s: float,
    result: str,
    validators: Mapping[str, Mapping[str, str]] | None,
) -> dict[str, Any]:
    """A successful poll with nothing to commit (unchanged, or held): the snapshot stays."""
    fields: dict[str, Any] = {
        "last_poll_at": at,
        "last_success_at": at,
        "last_result": result,
        "last_error": None,
        "last_duration_s": duration_s,
        "consecutive_failures": 0,
        "not_before": None,
    }
    if validators is not None:
        fields["validators"] = validators
    return fields


def after_failure(
    *,
    previous_failures: int,
    at: datetime,
    duration_s: float,
    error: str,
    result: str,
    not_before: datetime | None,
) -> dict[str, Any]:
    """A failed poll: one more in the failure streak; the last success is kept."""
    return {
        "last_poll_at": at,
        "last_result": result,
        "last_error": error,
        "last_duration_s": duration_s,
        "consecutive_failures": previous_failures + 1,
        "not_before": not_before,
    }
