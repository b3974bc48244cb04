"""A source's ``mode`` and the keys that belong to it: which combinations make sense.

``snapshot`` (the default) diffs the whole list against a stored snapshot. ``append`` treats
the list as a log of immutable entries (``event_type``, ``remember``, ``remember_count``,
``stop_at_seen``). ``incremental`` asks for what changed since a cursor. ``confirm_deletes``
belongs to the modes that delete.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Literal

from bridge.models import CHANGE_TYPES

Mode = Literal["snapshot", "incremental", "append"]

DEFAULT_EVENT_TYPE = "item.created"
DEFAULT_REMEMBER_COUNT = 100_000
"""Seen keys an append source keeps at most: a week of an API answering 10 new entries a
minute, about 10 MB of state (~100 bytes a key)."""
MAX_REMEMBER_COUNT = 10_000_000

APPEND_KEYS = ("event_type", "remember", "remember_count", "stop_at_seen")
"""Keys that only ``mode = "append"`` reads."""
DELETING_KEYS = ("confirm_deletes", "max_deletes", "confirm_polls", "deletes")
"""Keys about deletions: an append source never deletes, so they make no sense there."""

_EVENT_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$")


def check_event_type(name: str) -> str:
    """Validate an append source's ``event_type``; return it."""
    if not _EVENT_TYPE.match(name):
        raise ValueError(
            f"{name!r} is not an event type name: dotted words of letters, digits, '_' or '-', "
            'e.g. "github.event"'
        )
    if name.startswith("item.") and name != DEFAULT_EVENT_TYPE:
        raise ValueError(
            f"{name!r}: the item.* names are pollbridge's own; an append source's entries are "
            f'"{DEFAULT_EVENT_TYPE}" or a name of yours, e.g. "github.event"'
        )
    return name


def listener_event(name: str) -> str:
    """A listener's ``events`` entry: a change type (``item.created`` is ``created``), or the
    ``event_type`` of an append source (checked against the sources by the whole config)."""
    short = name.removeprefix("item.")
    if short in CHANGE_TYPES:
        return short
    if not _EVENT_TYPE.match(name) or name.startswith("item."):
        raise ValueError(
            f"{name!r} is not an event type: created, updated, deleted, or the event_type of "
            'an append source (e.g. "github.event")'
        )
    return name


def mode_problem(mode: Mode, given: Collection[str], paginated: bool) -> str | None:
    """Why the keys set explicitly (``given``) do not fit ``mode``, or None."""
    if mode != "append":
        wrong = [k for k in APPEND_KEYS if k in given]
        if wrong:
            return f'{_names(wrong)} applies only to mode = "append" (this source is {mode!r})'
        return None
    wrong = [k for k in DELETING_KEYS if k in given]
    if wrong:
        return (
            f'{_names(wrong)} makes no sense with mode = "append": an append source never '
            "deletes (it emits each new entry once)"
        )
    if "stop_at_seen" in given and not paginated:
        return "'stop_at_seen' applies only with a [sources.paginate] table"
    if "detail" in given:
        # the detail fetch decides what to re-fetch from a snapshot, which an append source
        # does not keep
        return '[sources.detail] is not supported with mode = "append"'
    return None


def event_names(types: Collection[str]) -> str:
    """The event types a listener may name, for a message."""
    return ", ".join([*CHANGE_TYPES, *sorted(types)])


def _names(keys: list[str]) -> str:
    return ", ".join(f"'{k}'" for k in keys)
