"""Event-log sources (``mode = "append"``): which entries are new, and which seen keys to forget.

An append source's list is a log of immutable entries. An entry whose key was not seen before
is one event; nothing is updated or deleted. Instead of a snapshot, the store keeps the keys
seen, each with the time it was first seen, bounded by age (``remember``) and by number
(``remember_count``). A key the latest answer still holds is never forgotten, whatever its
age: forgetting it would make it new again at the next poll, a duplicate event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bridge.core.diff import patch_ignoring
from bridge.core.paths import JsonPath
from bridge.models import Change, Item


@dataclass(frozen=True)
class SeenWindow:
    """How long and how many seen keys an append source remembers."""

    remember: timedelta
    remember_count: int


@dataclass(frozen=True)
class AppendPlan:
    """What one poll of an append source records."""

    new: list[Item]
    """Entries not seen before, in the answer's order (a key repeated in it counts once)."""
    forget: list[str]
    """Seen keys to drop, oldest first: past ``remember``, or beyond ``remember_count``."""
    remembered: int
    """How many keys are remembered once the poll is committed."""
    over_count: bool
    """The answer alone holds more keys than ``remember_count``: they are all kept."""


def unique_entries(pages: Iterable[Sequence[Item]]) -> list[Item]:
    """The pages' entries in order, each key once.

    A log moves while it is paged: a new entry pushes the last one of a page onto the next,
    where it is met again. That is no error here, as nothing is deleted from an append source.
    """
    out: list[Item] = []
    met: set[str] = set()
    for page in pages:
        for item in page:
            if item.key_text not in met:
                met.add(item.key_text)
                out.append(item)
    return out


def holds_seen(page: Sequence[Item], seen: Mapping[str, object]) -> bool:
    """Whether a page holds an entry already seen (``stop_at_seen``: fetch no further page)."""
    return any(item.key_text in seen for item in page)


def stop_rule(
    seen: Mapping[str, object],
    *,
    stop_at_seen: bool,
    baseline: Literal["silent", "emit"] | None,
) -> Callable[[Sequence[Item]], bool] | None:
    """When a walk over a newest-first log may end early, or None to walk every page.

    A later poll stops after the first page holding a seen key: nothing beyond it is new. A
    silent baseline (``baseline``) needs only the first page: what lies beyond it is older,
    and a later walk never reaches it, as it stops at the first page's entries.
    """
    if not stop_at_seen or baseline == "emit":
        return None
    if baseline == "silent":
        return lambda page: True
    return lambda page: holds_seen(page, seen)


def plan_append(
    seen: Mapping[str, datetime],
    entries: Sequence[Item],
    now: datetime,
    window: SeenWindow,
) -> AppendPlan:
    """Split ``entries`` (see :func:`unique_entries`) into new ones and choose what to forget.

    ``seen`` maps each remembered key to when it was first seen, and iterates oldest first (as
    the store loads it, and as new keys are appended). The new keys are first seen ``now``.
    Forgotten, oldest first: keys first seen before ``now - remember``, and more while over
    ``remember_count``. Keys in ``entries`` are never forgotten. The walk over ``seen`` ends
    at the first key kept for both reasons, so a poll costs O(entries + forgotten), not
    O(remembered).
    """
    new = [item for item in entries if item.key_text not in seen]
    answered = {item.key_text for item in entries}
    horizon = now - window.remember
    excess = len(seen) + len(new) - window.remember_count
    forget: list[str] = []
    for key, at in seen.items():
        old = at < horizon
        if not old and excess <= 0:
            break
        if key in answered:
            continue
        forget.append(key)
        excess -= 1
    kept = len(seen) - len(forget) + len(new)
    return AppendPlan(new, forget, kept, len(answered) > window.remember_count)


def append_changes(
    new: Sequence[Item], event_name: str | None, ignore: Sequence[JsonPath] = ()
) -> list[Change]:
    """One ``created`` change per new entry, typed ``event_name`` when the source names it."""
    changes = []
    for item in new:
        patch = patch_ignoring(None, item.value, ignore)
        changes.append(
            Change(
                "created", item.key, item.key_text, None, item.value, patch, item.hash, event_name
            )
        )
    return changes
