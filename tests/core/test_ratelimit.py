"""rate = "20/s": parsing, and a token bucket that never lets more through than it should."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.ratelimit import Rate, TokenBucket, parse_rate

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(
    ("text", "count", "per_s", "shown"),
    [
        ("20/s", 20, 1, "20/s"),
        ("100/m", 100, 60, "100/m"),
        ("1000/h", 1000, 3600, "1000/h"),
        ("5/10s", 5, 10, "5/10s"),
        (" 2.5 / min ", 2.5, 60, "2.5/m"),
        ("1/1d", 1, 86400, "1/d"),
    ],
)
def test_rates_parse(text, count, per_s, shown):
    """Requests per unit, or per a duration."""
    rate = parse_rate(text)
    assert rate == Rate(count, per_s)
    assert str(rate) == shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20", "expected requests per unit"),
        ("20/fortnight", "not a unit of time"),
        ("0/s", "greater than zero"),
        ("-1/s", "expected requests per unit"),
        ("x/s", "expected requests per unit"),
    ],
)
def test_bad_rates_say_why(text, message):
    """A malformed rate is rejected at load with an example of a good one."""
    with pytest.raises(ValueError, match=message):
        parse_rate(text)


def test_bucket_spends_its_burst_then_waits_for_the_rate():
    """Full at start; empty after `capacity` takes; the next token comes after 1/rate seconds."""
    bucket = TokenBucket(4.0, 2, now=0.0)
    assert bucket.available(0.0) == 2
    assert bucket.try_take(0.0) and bucket.try_take(0.0)
    assert not bucket.try_take(0.0)
    assert bucket.wait_s(0.0) == pytest.approx(0.25)
    assert not bucket.try_take(0.2)
    assert bucket.try_take(0.25)
    assert bucket.available(100.0) == 2  # never more than its capacity


@RELAXED
@given(
    st.floats(0.5, 50),
    st.integers(1, 5),
    st.lists(st.floats(0, 0.5), min_size=1, max_size=60),
)
def test_no_window_admits_more_than_capacity_plus_rate_times_length(rate, capacity, steps):
    """Token bucket law: takes in any window [a, b] <= capacity + rate * (b - a)."""
    bucket = TokenBucket(rate, capacity, now=0.0)
    now = 0.0
    taken: list[float] = []
    for step in steps:
        now += step
        while bucket.try_take(now):
            taken.append(now)
    for i, start in enumerate(taken):
        for j in range(i, len(taken)):
            assert j - i + 1 <= capacity + rate * (taken[j] - start) + 1e-6


@RELAXED
@given(st.floats(0.1, 100), st.floats(0, 10))
def test_waiting_wait_s_always_yields_a_token(rate, later):
    """After an empty bucket, waiting exactly wait_s() is enough for the next request."""
    bucket = TokenBucket(rate, 1, now=0.0)
    assert bucket.try_take(later)
    wait = bucket.wait_s(later)
    assert wait > 0
    assert bucket.try_take(later + wait)
