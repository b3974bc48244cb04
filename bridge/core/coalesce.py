"""Coalescing: consecutive updates of one item, not yet sent, become one net update."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.core.diff import patch_ignoring
from bridge.core.paths import JsonPath
from bridge.models import Event


def merged_changes(
    events: Sequence[Event], ignore: Sequence[JsonPath] = ()
) -> list[dict[str, Any]] | None:
    """The RFC 6902 patch from the first event's ``before`` to the last one's ``after``.

    Ignored paths are left out, as in every event. None when the updates cancel out: the
    receiver already holds that state, so nothing needs to be sent.
    """
    if not events:
        return None
    patch = patch_ignoring(events[0].before, events[-1].after, ignore)
    return patch or None
