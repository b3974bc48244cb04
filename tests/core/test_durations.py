"""Durations as operators write them: parse_duration and format_duration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.durations import format_duration, parse_duration, parse_since


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("14d", timedelta(days=14)),
        ("500ms", timedelta(milliseconds=500)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("1.5h", timedelta(minutes=90)),
        ("0.25s", timedelta(milliseconds=250)),
        ("0s", timedelta(0)),
        (" 1H 30M ", timedelta(hours=1, minutes=30)),
        ("10MS", timedelta(milliseconds=10)),
    ],
)
def test_parse_duration_accepts_operator_forms(text: str, expected: timedelta) -> None:
    """Every documented form parses to the timedelta it names, case and spaces aside."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["30", "s", "5x", "-5s", "1h30", "1.s", "30 seconds", "5s!", "h1", "1e3s", "∞s"],
)
def test_parse_duration_rejects_malformed_text(text: str) -> None:
    """Anything but number+unit pairs raises ValueError quoting the input and the units."""
    with pytest.raises(ValueError, match=r"invalid duration .*ms, s, m, h, d") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["", "   "])
def test_parse_duration_rejects_empty_text(text: str) -> None:
    """An empty duration is an error that says what a duration looks like."""
    with pytest.raises(ValueError, match="empty duration; expected a number with a unit"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=1), "1s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1), "1h"),
        (timedelta(days=1, hours=1), "1d1h"),
        (timedelta(days=2, seconds=5), "2d5s"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(milliseconds=1), "1ms"),
    ],
)
def test_format_duration_renders_short_form(value: timedelta, expected: str) -> None:
    """Durations render largest unit first with no zero parts; sub-second ones in ms."""
    assert format_duration(value) == expected


@given(st.integers(min_value=0, max_value=400 * 86400))
def test_whole_seconds_round_trip(seconds: int) -> None:
    """format_duration's output parses back to the same whole-second duration."""
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@given(st.integers(min_value=1, max_value=999))
def test_sub_second_durations_round_trip(millis: int) -> None:
    """Sub-second durations render in milliseconds and parse back unchanged."""
    value = timedelta(milliseconds=millis)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", datetime(2026, 11, 23, 11, tzinfo=UTC)),
        ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00", datetime(2026, 11, 23, 10, tzinfo=UTC)),
    ],
)
def test_since_is_a_duration_back_or_a_time(text: str, expected: datetime) -> None:
    """The CLI's --since and the console's since= read the same: a duration or a UTC time."""
    assert parse_since(text, datetime(2026, 11, 23, 12, tzinfo=UTC)) == expected


def test_since_says_what_it_expects() -> None:
    with pytest.raises(ValueError, match=r"expected a duration .* or a time"):
        parse_since("yesterday", datetime(2026, 11, 23, 12, tzinfo=UTC))
