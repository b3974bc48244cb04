"""Retry policy: Retry-After parsing, delivery back-off and poll back-off."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.retry import (
    JITTER,
    MAX_RETRY_AFTER_S,
    next_delivery_delay,
    parse_retry_after,
    poll_backoff,
    retry_at,
)

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
SCHEDULE = [5.0, 300.0, 1800.0]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("  30 ", 30.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:29:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 09:28:00 +0200", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 -0000", None),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("²", None),
        ("١٢", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Delta-seconds and zoned HTTP dates give a wait (past dates give 0); anything else None."""
    assert parse_retry_after(header, NOW) == expected


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(header: str) -> None:
    """A remote server's header can never crash the sender: the result is None or >= 0."""
    result = parse_retry_after(header, NOW)
    assert result is None or result >= 0


@pytest.mark.parametrize(
    ("failed", "rand", "retry_after_s", "expected"),
    [
        (0, 0.5, None, 0.0),
        (1, 0.5, None, 5.0),
        (2, 0.5, None, 300.0),
        (3, 0.5, None, 1800.0),
        (4, 0.5, None, None),
        (1, 0.0, None, 4.0),
        (2, 0.0, None, 240.0),
        (2, 1.0, None, 360.0),
        (2, 0.5, 1000.0, 1000.0),
        (2, 0.5, 10.0, 240.0),
        (2, 0.5, 10 * 86400.0, MAX_RETRY_AFTER_S),
        (4, 0.5, 10.0, None),
    ],
)
def test_next_delivery_delay(
    failed: int, rand: float, retry_after_s: float | None, expected: float | None
) -> None:
    """The schedule entry for this failure, jittered; Retry-After bounded; None once exhausted."""
    assert next_delivery_delay(SCHEDULE, failed, rand, retry_after_s) == pytest.approx(expected)


@given(
    st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=8),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_delivery_delay_stays_within_jitter_bounds(
    schedule: list[float], failed: int, rand: float
) -> None:
    """Every scheduled delay lies within ±20% of its schedule entry; past the end, dead."""
    delay = next_delivery_delay(schedule, failed, rand)
    if failed > len(schedule):
        assert delay is None
    else:
        base = schedule[failed - 1]
        assert delay is not None
        assert base * (1 - JITTER) * (1 - 1e-9) <= delay <= base * (1 + JITTER) * (1 + 1e-9)


@given(
    st.integers(min_value=1, max_value=3),
    st.floats(min_value=0.0, max_value=1e9),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_retry_after_is_honoured_but_bounded(
    failed: int, retry_after_s: float, rand: float
) -> None:
    """A Retry-After is never waited less than the lower jitter bound nor more than 24 hours."""
    delay = next_delivery_delay(SCHEDULE, failed, rand, retry_after_s)
    lower = SCHEDULE[failed - 1] * (1 - JITTER)
    assert delay == max(lower, min(retry_after_s, MAX_RETRY_AFTER_S))


@pytest.mark.parametrize(
    ("interval_s", "failures", "cap_s", "rand", "expected"),
    [
        (30.0, 0, 3600.0, 0.5, 0.0),
        (30.0, 1, 3600.0, 0.5, 0.0),
        (30.0, 2, 3600.0, 0.5, 60.0),
        (30.0, 3, 3600.0, 0.5, 120.0),
        (30.0, 4, 3600.0, 0.0, 192.0),
        (30.0, 4, 3600.0, 1.0, 288.0),
        (30.0, 20, 3600.0, 0.5, 3600.0),
        (30.0, 20, 3600.0, 0.0, 2880.0),
    ],
)
def test_poll_backoff_doubles_and_caps(
    interval_s: float, failures: int, cap_s: float, rand: float, expected: float
) -> None:
    """No extra wait after one failure, then doubling from the interval, capped, ±20%."""
    assert poll_backoff(interval_s, failures, cap_s, rand) == pytest.approx(expected)


@given(
    st.floats(min_value=0.1, max_value=86400.0),
    st.integers(min_value=0, max_value=2000),
    st.floats(min_value=1.0, max_value=86400.0),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_poll_backoff_never_exceeds_cap_plus_jitter(
    interval_s: float, failures: int, cap_s: float, rand: float
) -> None:
    """However many failures, the back-off stays finite and within the jittered cap."""
    delay = poll_backoff(interval_s, failures, cap_s, rand)
    assert 0.0 <= delay <= cap_s * (1 + JITTER) * (1 + 1e-9)


def test_retry_at_draws_jitter_only_for_a_retry() -> None:
    """Delivered and failed-for-good attempts are not tried again and use no random draw."""
    from bridge.models import AttemptResult

    now = datetime(2026, 1, 1, tzinfo=UTC)
    draws: list[float] = []

    def rand() -> float:
        draws.append(0.5)
        return 0.5

    assert retry_at([10.0], 1, rand, AttemptResult(True, 204, 0.01), now) is None
    local = AttemptResult(False, None, 0.0, error="body", retryable=False, sent=False)
    assert retry_at([10.0], 1, rand, local, now) is None
    assert draws == []
    failed = AttemptResult(False, 500, 0.01, error="HTTP 500")
    assert retry_at([10.0], 1, rand, failed, now) == pytest.approx(now.timestamp() + 10.0)
    assert retry_at([10.0], 2, rand, failed, now) is None  # retries used up: dead
    gone = AttemptResult(False, 410, 0.01, error="HTTP 410", gone=True)
    assert retry_at([10.0], 2, rand, gone, now) == now.timestamp()  # waits for a resume
