"""Which listeners receive a change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.models import Change, ChangeType


@dataclass(frozen=True)
class ListenerRoute:
    """A listener's filters, reduced to what routing needs."""

    name: str
    sources: frozenset[str] | None
    """None means every source."""
    events: frozenset[ChangeType]

    def accepts(self, source: str, change: Change) -> bool:
        if self.sources is not None and source not in self.sources:
            return False
        return change.type in self.events


def route_change(source: str, change: Change, routes: Sequence[ListenerRoute]) -> list[str]:
    """Names of the listeners that get ``change``, in configuration order."""
    return [r.name for r in routes if r.accepts(source, change)]
