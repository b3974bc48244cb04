"""When to try a failed delivery or poll again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime

from bridge.models import AttemptResult

JITTER = 0.2
MAX_RETRY_AFTER_S = 24 * 3600.0


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit also accepts e.g. "²"
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def next_delivery_delay(
    schedule_s: Sequence[float],
    failed_attempts: int,
    rand: float,
    retry_after_s: float | None = None,
) -> float | None:
    """Seconds until the next attempt after ``failed_attempts`` failures, or None when dead.

    ``rand`` in [0, 1) spreads the scheduled delay by ±20%. A ``Retry-After`` is honoured,
    but never sooner than the delay's lower bound and never later than 24 hours.
    """
    if failed_attempts < 1:
        return 0.0
    if failed_attempts > len(schedule_s):
        return None
    base = schedule_s[failed_attempts - 1]
    delay = base * (1 - JITTER + 2 * JITTER * rand)
    if retry_after_s is not None:
        delay = max(base * (1 - JITTER), min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


def poll_backoff(
    interval_s: float, consecutive_failures: int, max_backoff_s: float, rand: float
) -> float:
    """Extra wait before the next poll after repeated failures: doubling, capped, ±20%."""
    if consecutive_failures <= 1:
        return 0.0
    # The exponent is capped: 2.0 ** 1024 raises OverflowError after a long outage.
    doublings = min(consecutive_failures - 1, 64)
    delay = min(interval_s * 2.0**doublings, max_backoff_s)
    return delay * (1 - JITTER + 2 * JITTER * rand)


def retry_at(
    schedule_s: Sequence[float],
    failed: int,
    rand: Callable[[], float],
    result: AttemptResult,
    now: datetime,
) -> float | None:
    """When (epoch seconds) an attempt that ended with ``result`` is tried again, after
    ``failed`` attempts in all; None when it is not: delivered, failed for good, or retries
    used up. A 410 Gone is always tried again (its listener is paused meanwhile)."""
    if result.ok or not result.retryable:
        return None
    delay = next_delivery_delay(schedule_s, failed, rand(), result.retry_after_s)
    now_s = now.timestamp()
    if result.gone:
        return now_s if delay is None else now_s + delay
    return None if delay is None else now_s + delay
