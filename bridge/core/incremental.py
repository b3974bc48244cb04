"""Incremental sources: the rules for a poll that asks only for what changed since a cursor.

Pure: no I/O and no clock (the time is passed in where a rule needs one). The cursor is always
a value taken from the data (the greatest ``incremental.cursor`` among the returned items),
never the bridge's clock, so a clock jump on the bridge's host changes nothing it asks for.

A cursor is held as an aware UTC ``datetime``: every ``format`` (ISO 8601 times, Unix seconds or
milliseconds, a strftime pattern) maps onto one ordered scale, and ``lookback`` is a duration
on it. It is stored as ISO 8601 text with microseconds (:func:`cursor_text`), whatever the
format, so changing ``format`` does not lose it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from bridge.core.bodypath import with_body_value
from bridge.core.diff import DiffPlan
from bridge.core.paths import JsonPath
from bridge.core.routing import EventMatch
from bridge.models import Item

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NAMED_FORMATS = ("iso8601", "unix", "unix_ms")
SIZE_PARAMS = frozenset(
    [
        "limit",
        "per_page",
        "page_size",
        "pagesize",
        "size",
        "count",
        "max_results",
        "maxresults",
        "top",
        "$top",
        "first",
        "max",
        "rows",
        "num",
    ]
)
"""Query parameters that, by common convention, cap how many results one response holds."""


class CursorError(ValueError):
    """A cursor value that cannot be read or written in the configured ``format``."""


@dataclass(frozen=True)
class IncrementalSpec:
    """A source's ``[sources.incremental]`` table as plain values (built once at load)."""

    cursor: JsonPath
    format: str
    """``iso8601``, ``unix``, ``unix_ms`` or a strftime pattern."""
    param: str | None = None
    body_path: tuple[str, ...] | None = None
    start: datetime | None = None
    """None for ``start = "now"``."""
    lookback: timedelta = timedelta(0)
    deleted_when: EventMatch | None = None
    reconcile_every: timedelta | None = None


# --- cursor values ------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    """A parsed time in UTC; a time that names no zone is read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _epoch_number(value: Any, fmt: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CursorError(f"expected a number of {_unit(fmt)}, got {_kind(value)}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise CursorError(f"expected a number of {_unit(fmt)}, got {value!r}") from None
    if not number.is_finite():
        raise CursorError(f"expected a number of {_unit(fmt)}, got {value!r}")
    return number


def _unit(fmt: str) -> str:
    return "milliseconds since 1970" if fmt == "unix_ms" else "seconds since 1970"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def parse_cursor_value(value: Any, fmt: str) -> datetime:
    """An item's cursor value read in ``fmt``, as an aware UTC time; CursorError otherwise."""
    if fmt in ("unix", "unix_ms"):
        number = _epoch_number(value, fmt)
        micros = number * (1000 if fmt == "unix_ms" else 1_000_000)
        try:
            return EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            raise CursorError(f"{value!r} is out of range") from None
    if not isinstance(value, str):
        raise CursorError(f"expected a time text, got {_kind(value)}")
    if fmt == "iso8601":
        try:
            return _utc(datetime.fromisoformat(value.strip()))
        except ValueError:
            raise CursorError(
                f"{value!r} is not an ISO 8601 time (e.g. 2026-11-23T12:00:00Z)"
            ) from None
    try:
        return _utc(datetime.strptime(value, fmt))  # noqa: DTZ007 - made UTC by _utc
    except ValueError:
        raise CursorError(f"{value!r} does not match the pattern {fmt!r}") from None


def cursor_value(moment: datetime, fmt: str, *, number: bool = False) -> str | int:
    """The value sent for ``moment``: rounded down to the format's precision (asking for a bit
    more is harmless, a bit less would skip changes). ``number``: Unix formats as JSON numbers."""
    moment = moment.astimezone(UTC)
    if fmt in ("unix", "unix_ms"):
        step = timedelta(milliseconds=1) if fmt == "unix_ms" else timedelta(seconds=1)
        count = (moment - EPOCH) // step
        return count if number else str(count)
    if fmt == "iso8601":
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime(fmt)


def check_format(fmt: str) -> None:
    """Refuse a ``format`` that is neither a named format nor a strftime pattern that reads back
    what it writes (ValueError saying why)."""
    if fmt in NAMED_FORMATS:
        return
    if "%" not in fmt:
        raise ValueError(
            f"{fmt!r} is not a format; expected iso8601, unix, unix_ms or a strftime pattern "
            'such as "%Y-%m-%d %H:%M:%S"'
        )
    sample = datetime(2026, 11, 23, 12, 34, 56, tzinfo=UTC)
    try:
        written = sample.strftime(fmt)
        datetime.strptime(written, fmt)  # noqa: DTZ007 - only checks that it parses
    except ValueError as exc:
        raise ValueError(f"strftime pattern {fmt!r} cannot be read back: {exc}") from None


def cursor_text(moment: datetime) -> str:
    """A cursor as stored: ISO 8601 in UTC with microseconds."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def load_cursor(text: str | None) -> datetime | None:
    """A stored cursor (see :func:`cursor_text`); None when none is stored."""
    return None if text is None else _utc(datetime.fromisoformat(text))


def parse_start(text: str) -> datetime | None:
    """``start``: "now" (None) or an RFC 3339 time (UTC when it names no zone)."""
    if text.strip().lower() == "now":
        return None
    try:
        return _utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ValueError(
            f'{text!r}: expected "now" or an RFC 3339 time such as "2026-11-23T12:00:00Z"'
        ) from None


# --- what a poll asks for -----------------------------------------------------------------------

PollKind = Literal["window", "full"]


@dataclass(frozen=True)
class PollPlan:
    """What one poll of an incremental source asks for."""

    kind: PollKind
    """``window``: items changed since ``since``; ``full``: the complete list."""
    since: datetime | None
    """The lower bound sent (stored cursor minus lookback, or ``start``); None: no bound."""
    why: str
    """Why this kind: "changes since the cursor", "first poll", "reconcile", ..."""
    rebaseline: bool = False
    """The source's definition changed: the result is recorded as a re-baseline."""


def plan_poll(
    spec: IncrementalSpec,
    *,
    cursor: datetime | None,
    reconciled_at: datetime | None,
    first: bool,
    rebaseline: bool,
    now: datetime,
) -> PollPlan:
    """Decide what a poll asks for.

    - first poll or re-baseline with ``start = "now"``: the full list, recorded as a baseline;
      its greatest cursor value is the first cursor (only later changes are events).
    - first poll or re-baseline with ``start`` a time: changes since that time (a backfill).
    - ``reconcile_every`` elapsed since the last complete list: the full list, which also finds
      hard deletes.
    - otherwise changes since the stored cursor minus ``lookback``; with no cursor yet (the
      first list was empty) every item, with no lower bound.
    """
    if rebaseline:
        return PollPlan("full" if spec.start is None else "window", spec.start, "re-baseline", True)
    if first:
        if spec.start is None:
            return PollPlan("full", None, "first poll")
        return PollPlan("window", spec.start, "backfill from start")
    if spec.reconcile_every is not None and (
        reconciled_at is None or now >= reconciled_at + spec.reconcile_every
    ):
        return PollPlan("full", None, "reconcile")
    if cursor is None:
        if spec.start is not None:
            return PollPlan("window", spec.start, "no change seen yet since start")
        return PollPlan("window", None, "no change seen yet: asking for every item")
    return PollPlan("window", cursor - spec.lookback, "changes since the cursor")


def window_request(
    spec: IncrementalSpec, params: Mapping[str, Any], body: Any, since: datetime | None
) -> tuple[dict[str, Any], Any]:
    """The query parameters and JSON body of a window poll: the source's own, with the lower
    bound set in ``param`` or at ``body_path`` (left out when there is no bound)."""
    out_params = dict(params)
    if since is None:
        return out_params, body
    if spec.param is not None:
        out_params[spec.param] = cursor_value(since, spec.format)
        return out_params, body
    assert spec.body_path is not None  # noqa: S101 - one of the two is checked at load
    return out_params, with_body_value(
        body, spec.body_path, cursor_value(since, spec.format, number=True)
    )


# --- what came back -----------------------------------------------------------------------------


def item_cursor(item: Item, spec: IncrementalSpec) -> datetime:
    """``item``'s cursor value; CursorError naming the key when it is missing or unreadable."""
    found = spec.cursor.find(item.value)
    if len(found) != 1 or found[0] is None:
        what = "has no value" if not found or found[0] is None else f"has {len(found)} values"
        raise CursorError(f"item {item.key_text!r} {what} at incremental.cursor {spec.cursor.text}")
    try:
        return parse_cursor_value(found[0], spec.format)
    except CursorError as exc:
        raise CursorError(
            f"item {item.key_text!r}: incremental.cursor {spec.cursor.text}: {exc}"
        ) from None


def is_deleted(item: Item, spec: IncrementalSpec) -> bool:
    """Whether ``deleted_when`` selects something in ``item`` (a soft-deleted item)."""
    return spec.deleted_when is not None and spec.deleted_when.matches(item.value)


def greatest_cursor(items: Sequence[Item], spec: IncrementalSpec) -> datetime | None:
    """The greatest cursor value among ``items`` (None for none); CursorError on a bad one."""
    best: datetime | None = None
    for item in items:
        moment = item_cursor(item, spec)
        if best is None or moment > best:
            best = moment
    return best


def advance(stored: datetime | None, seen: datetime | None) -> datetime | None:
    """The cursor after a poll: it never moves back (a lookback re-sees older items)."""
    if stored is None:
        return seen
    if seen is None:
        return stored
    return max(stored, seen)


@dataclass(frozen=True)
class WindowPlan:
    """What an incremental window changes in the snapshot."""

    plan: DiffPlan
    upserts: list[Item]
    """The created and updated items, in response order."""
    cursor: datetime | None
    """The greatest cursor value among every returned item (deleted ones too)."""
    returned: int
    """Distinct items returned."""


def latest_versions(pages: Sequence[Sequence[Item]], spec: IncrementalSpec) -> list[Item]:
    """Each key once: an item changed while the window was paged may come back twice, and the
    version with the greater cursor (the later page on a tie) is the one that counts."""
    best: dict[str, tuple[datetime, Item]] = {}
    for page in pages:
        for item in page:
            moment = item_cursor(item, spec)
            held = best.get(item.key_text)
            if held is None or moment >= held[0]:
                best[item.key_text] = (moment, item)
    return [item for _, item in best.values()]


def plan_window(
    pages: Sequence[Sequence[Item]], old_hashes: Mapping[str, str], spec: IncrementalSpec
) -> WindowPlan:
    """Compare a window's items with the snapshot: unknown -> created, a different hash ->
    updated, the same -> nothing; an item ``deleted_when`` selects -> deleted if known (else
    nothing). Nothing else is deleted: a window is not a complete list."""
    items = latest_versions(pages, spec)
    created: list[str] = []
    updated: list[str] = []
    deleted: list[str] = []
    upserts: list[Item] = []
    cursor: datetime | None = None
    for item in items:
        moment = item_cursor(item, spec)
        cursor = moment if cursor is None or moment > cursor else cursor
        old = old_hashes.get(item.key_text)
        if is_deleted(item, spec):
            if old is not None:
                deleted.append(item.key_text)
        elif old is None:
            created.append(item.key_text)
            upserts.append(item)
        elif old != item.hash:
            updated.append(item.key_text)
            upserts.append(item)
    return WindowPlan(DiffPlan(created, updated, sorted(deleted)), upserts, cursor, len(items))


def without_deleted(
    pages: Sequence[Sequence[Item]], spec: IncrementalSpec, old: Mapping[str, str] | None = None
) -> list[list[Item]]:
    """A complete list's pages without the items ``deleted_when`` selects (so they are absent,
    and deleted by the ordinary diff). With ``old`` (the snapshot's hashes) an item stored with
    the same hash is kept unread: it was not deleted when stored (a JSONPath filter costs
    ~0.1 ms, too much for every item of a large list)."""
    if spec.deleted_when is None:
        return [list(p) for p in pages]
    known = old or {}
    return [
        [i for i in p if known.get(i.key_text) == i.hash or not is_deleted(i, spec)] for p in pages
    ]


def capped_warning(
    returned: int, params: Mapping[str, Any], *, paginated: bool, previous: int | None
) -> str | None:
    """A warning when a window without pagination came back exactly full: the API probably
    caps its results, and the changes beyond the cap are lost.

    Full means: as many items as a page-size parameter (``limit``, ``per_page``, ...) asks
    for, or, with no such parameter, the same count (10 or more) as the previous window.
    """
    if paginated or returned == 0:
        return None
    for name, value in params.items():
        if name.lower() in SIZE_PARAMS and str(value).strip() == str(returned):
            return (
                f"the window returned exactly {returned} items, the {name} = {value} cap, and "
                "the source has no pagination: changes beyond the cap are lost; add "
                "[sources.paginate] or poll more often"
            )
    if previous is not None and returned >= 10 and returned == previous:
        return (
            f"two windows in a row returned exactly {returned} items and the source has no "
            "pagination: the API may cap its results, and changes beyond the cap are lost; add "
            "[sources.paginate] or poll more often"
        )
    return None
