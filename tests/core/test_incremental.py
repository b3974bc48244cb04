"""The incremental rules: cursor values, the window asked for, and what a window changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.extract import key_text
from bridge.core.hashing import hash_value
from bridge.core.incremental import (
    CursorError,
    IncrementalSpec,
    advance,
    capped_warning,
    check_format,
    cursor_text,
    cursor_value,
    greatest_cursor,
    load_cursor,
    parse_cursor_value,
    parse_start,
    plan_poll,
    plan_window,
    window_request,
    without_deleted,
)
from bridge.core.paths import compile_path
from bridge.core.routing import compile_match
from bridge.models import Item

T = datetime(2026, 3, 1, 9, 0, 25, tzinfo=UTC)


def spec(**kw: object) -> IncrementalSpec:
    fields: dict[str, object] = {
        "cursor": compile_path("$.updated_at"),
        "format": "iso8601",
        "param": "updated_since",
    }
    fields.update(kw)
    return IncrementalSpec(**fields)  # type: ignore[arg-type]


def item(key: str, **value: object) -> Item:
    body = {"id": key, **value}
    return Item(key, key_text(key), body, hash_value(body))


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("2026-03-01T09:00:25Z", "iso8601", T),
        ("2026-03-01T10:00:25+01:00", "iso8601", T),
        ("2026-03-01 09:00:25", "iso8601", T),  # no zone: UTC
        ("2026-03-01T09:00:25.5Z", "iso8601", T + timedelta(milliseconds=500)),
        (1772355625, "unix", T),
        ("1772355625", "unix", T),
        (1772355625.25, "unix", T + timedelta(milliseconds=250)),
        (1772355625000, "unix_ms", T),
        ("1772355625123", "unix_ms", T + timedelta(milliseconds=123)),
        ("01/03/2026 09:00:25", "%d/%m/%Y %H:%M:%S", T),
    ],
)
def test_cursor_values_parse_in_their_format(value: object, fmt: str, expected: datetime):
    """Every format maps onto one UTC time scale."""
    assert parse_cursor_value(value, fmt) == expected


@pytest.mark.parametrize(
    ("value", "fmt", "why"),
    [
        ("yesterday", "iso8601", "not an ISO 8601 time"),
        (1772355625, "iso8601", "expected a time text"),
        (True, "unix", "expected a number of seconds"),
        ("soon", "unix", "expected a number of seconds"),
        ("nan", "unix_ms", "expected a number of milliseconds"),
        (None, "unix", "got null"),
        ("2026-03-01", "%d/%m/%Y", "does not match the pattern"),
        (10**30, "unix", "out of range"),
    ],
)
def test_unreadable_cursor_values_say_why(value: object, fmt: str, why: str):
    with pytest.raises(CursorError, match=why):
        parse_cursor_value(value, fmt)


@pytest.mark.parametrize(
    ("fmt", "sent"),
    [
        ("iso8601", "2026-03-01T09:00:25Z"),
        ("unix", "1772355625"),
        ("unix_ms", "1772355625999"),
        ("%Y-%m-%d %H:%M", "2026-03-01 09:00"),
    ],
)
def test_values_are_sent_rounded_down(fmt: str, sent: str):
    """Rounding down asks for a little more, never less."""
    assert cursor_value(T + timedelta(microseconds=999_999), fmt) == sent


def test_a_unix_cursor_in_a_json_body_is_a_number():
    assert cursor_value(T, "unix", number=True) == 1772355625
    assert cursor_value(T, "iso8601", number=True) == "2026-03-01T09:00:25Z"


# hypothesis takes naive bounds and adds the zone itself
_EARLIEST = datetime(1971, 1, 1)  # noqa: DTZ001
_LATEST = datetime(2200, 1, 1)  # noqa: DTZ001


@given(st.datetimes(min_value=_EARLIEST, max_value=_LATEST, timezones=st.just(UTC)))
def test_a_sent_value_never_comes_after_the_cursor(moment: datetime):
    """Law: parse(format(m)) <= m for every format, and within its precision of it."""
    for fmt, step in (("iso8601", 1), ("unix", 1), ("unix_ms", 0.001)):
        back = parse_cursor_value(cursor_value(moment, fmt), fmt)
        assert back <= moment < back + timedelta(seconds=step)


def test_stored_cursors_round_trip():
    assert load_cursor(cursor_text(T)) == T
    assert cursor_text(T) == "2026-03-01T09:00:25.000000+00:00"
    assert load_cursor(None) is None


@pytest.mark.parametrize("fmt", ["iso8601", "unix", "unix_ms", "%Y-%m-%dT%H:%M:%S%z", "%Y%m%d"])
def test_formats_that_read_back_are_accepted(fmt: str):
    check_format(fmt)


@pytest.mark.parametrize(
    ("fmt", "why"),
    [("rfc822", "is not a format"), ("%Q", "cannot be read back"), ("%s", "cannot be read back")],
)
def test_formats_that_cannot_be_read_back_are_refused(fmt: str, why: str):
    with pytest.raises(ValueError, match=why):
        check_format(fmt)


def test_start_is_now_or_a_time():
    assert parse_start("now") is None
    assert parse_start("2026-03-01T09:00:25Z") == T
    with pytest.raises(ValueError, match='expected "now" or an RFC 3339 time'):
        parse_start("last week")


def _plan(s: IncrementalSpec, **kw: object):  # type: ignore[no-untyped-def]
    fields: dict[str, object] = {
        "cursor": None,
        "reconciled_at": None,
        "first": False,
        "rebaseline": False,
        "now": T,
    }
    fields.update(kw)
    return plan_poll(s, **fields)  # type: ignore[arg-type]


def test_the_window_starts_lookback_before_the_cursor():
    p = _plan(spec(lookback=timedelta(minutes=2)), cursor=T)
    assert (p.kind, p.since) == ("window", T - timedelta(minutes=2))


def test_a_first_poll_from_now_is_a_complete_list_and_from_a_time_a_backfill():
    assert _plan(spec(), first=True).kind == "full"
    backfill = _plan(spec(start=T), first=True)
    assert (backfill.kind, backfill.since, backfill.rebaseline) == ("window", T, False)
    again = _plan(spec(start=T), rebaseline=True)
    assert (again.kind, again.since, again.rebaseline) == ("window", T, True)
    assert _plan(spec(), rebaseline=True).kind == "full"


def test_no_cursor_yet_asks_from_start_or_without_a_bound():
    assert _plan(spec()).since is None
    assert _plan(spec(start=T)).since == T


def test_reconcile_is_due_every_interval():
    s = spec(reconcile_every=timedelta(days=1))
    assert _plan(s, cursor=T).why == "reconcile"  # never reconciled
    assert _plan(s, cursor=T, reconciled_at=T - timedelta(hours=23)).kind == "window"
    assert _plan(s, cursor=T, reconciled_at=T - timedelta(days=1)).kind == "full"


def test_the_bound_goes_in_the_param_or_the_body():
    params, body = window_request(spec(), {"per_page": 10}, None, T)
    assert params == {"per_page": 10, "updated_since": "2026-03-01T09:00:25Z"}
    assert body is None
    in_body = spec(param=None, body_path=("variables", "since"), format="unix")
    source_body = {"query": "q", "variables": {"first": 5}}
    params, body = window_request(in_body, {}, source_body, T)
    assert body == {"query": "q", "variables": {"first": 5, "since": 1772355625}}
    assert source_body == {"query": "q", "variables": {"first": 5}}  # not modified
    assert window_request(spec(), {"a": 1}, None, None) == ({"a": 1}, None)


def test_a_window_creates_updates_and_leaves_the_rest_alone():
    """Unknown -> created, another hash -> updated, same -> nothing; absent -> nothing."""
    same, old = item("1", v=1, updated_at="2026-03-01T09:00:20Z"), item("2", v=1)
    new2 = item("2", v=2, updated_at="2026-03-01T09:00:30Z")
    fresh = item("3", v=1, updated_at="2026-03-01T09:00:25Z")
    hashes = {"1": same.hash, "2": old.hash, "9": "h9"}
    found = plan_window([[new2], [same, fresh]], hashes, spec())
    assert (found.plan.created, found.plan.updated, found.plan.deleted) == (["3"], ["2"], [])
    assert [i.key_text for i in found.upserts] == ["2", "3"]
    assert found.cursor == T + timedelta(seconds=5)
    assert found.returned == 3


def test_deleted_when_deletes_known_items_only():
    s = spec(deleted_when=compile_match('$[?(@.status == "deleted")]'))
    gone = item("1", status="deleted", updated_at="2026-03-01T09:00:30Z")
    never = item("2", status="deleted", updated_at="2026-03-01T09:00:31Z")
    found = plan_window([[gone, never]], {"1": "h1"}, s)
    assert (found.plan.created, found.plan.deleted, found.upserts) == ([], ["1"], [])
    assert found.cursor == T + timedelta(seconds=6)
    live = item("3", status="open", updated_at="2026-03-01T09:00:30Z")
    assert without_deleted([[gone, live]], s) == [[live]]
    # a complete list reads deleted_when only for new or changed items
    assert without_deleted([[gone, live]], s, {"1": "other", "3": live.hash}) == [[live]]


def test_an_item_paged_twice_counts_in_its_latest_version():
    """An item changed while the window was paged shows up twice: the later cursor wins."""
    early = item("1", v=1, updated_at="2026-03-01T09:00:25Z")
    late = item("1", v=2, updated_at="2026-03-01T09:00:40Z")
    found = plan_window([[late], [early]], {}, spec())
    assert [i.value["v"] for i in found.upserts] == [2]


def test_a_missing_or_repeated_cursor_names_the_key():
    with pytest.raises(CursorError, match=r"item '7' has no value at incremental\.cursor"):
        greatest_cursor([item("7", v=1)], spec())
    with pytest.raises(CursorError, match="item '7' has no value"):
        greatest_cursor([item("7", updated_at=None)], spec())
    many = spec(cursor=compile_path("$.times[*]"))
    with pytest.raises(CursorError, match="item '7' has 2 values"):
        greatest_cursor([item("7", times=["a", "b"])], many)
    with pytest.raises(CursorError, match=r"item '7': incremental\.cursor"):
        greatest_cursor([item("7", updated_at="never")], spec())


def test_the_cursor_never_moves_back():
    assert advance(T, T - timedelta(hours=1)) == T
    assert advance(T, T + timedelta(seconds=1)) == T + timedelta(seconds=1)
    assert advance(None, T) == T
    assert advance(T, None) == T


@pytest.mark.parametrize(
    ("returned", "params", "paginated", "previous", "warns"),
    [
        (100, {"limit": 100}, False, None, True),
        (100, {"per_page": "100"}, False, None, True),
        (99, {"limit": 100}, False, None, False),
        (100, {"limit": 100}, True, None, False),
        (50, {}, False, 50, True),
        (50, {}, False, 49, False),
        (5, {}, False, 5, False),
        (0, {"limit": 0}, False, 0, False),
    ],
)
def test_a_window_that_comes_back_exactly_full_is_reported(
    returned: int, params: dict[str, object], paginated: bool, previous: int | None, warns: bool
):
    warning = capped_warning(returned, params, paginated=paginated, previous=previous)
    assert (warning is not None) == warns
    if warning:
        assert "changes beyond the cap are lost" in warning
