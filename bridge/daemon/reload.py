"""What a reload changes: the sources and listeners added, removed and changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.config import Config


@dataclass(frozen=True)
class NameDiff:
    added: list[str]
    removed: list[str]
    changed: list[str]

    @classmethod
    def of(cls, old: Sequence[Any], new: Sequence[Any]) -> NameDiff:
        """Compare two lists of named entries (sources or listeners) by name and settings."""
        before = {e.name: e for e in old}
        after = {e.name: e for e in new}
        return cls(
            added=sorted(set(after) - set(before)),
            removed=sorted(set(before) - set(after)),
            changed=sorted(
                n
                for n in set(before) & set(after)
                if before[n].model_dump() != after[n].model_dump()
            ),
        )

    def text(self) -> str:
        """``+2 -0 ~1 (+a, +b, ~c)``."""
        parts = (
            [f"+{n}" for n in self.added]
            + [f"-{n}" for n in self.removed]
            + [f"~{n}" for n in self.changed]
        )
        return (
            f"+{len(self.added)} -{len(self.removed)} ~{len(self.changed)}"
            f" ({', '.join(parts) or 'no change'})"
        )


@dataclass(frozen=True)
class ConfigDiff:
    sources: NameDiff
    listeners: NameDiff

    @classmethod
    def of(cls, old: Config, new: Config) -> ConfigDiff:
        return cls(NameDiff.of(old.sources, new.sources), NameDiff.of(old.listeners, new.listeners))

    def text(self) -> str:
        """The reload's log line: ``sources +1 -0 ~0 (+b); listeners +0 -0 ~0 (no change)``."""
        return f"sources {self.sources.text()}; listeners {self.listeners.text()}"
