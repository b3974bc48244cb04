"""The pipeline's side of event-log sources (``mode = "append"``) and of confirmed deletes:
the state each needs between polls, cached by snapshot version, and one poll's analysis.

The rules are :mod:`bridge.core.append` and :mod:`bridge.core.confirm`; the pipeline commits
what this module works out, with the poll's events, in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from bridge.config import SourceConfig
from bridge.core.append import (
    append_changes,
    plan_append,
    stop_rule,
    unique_entries,
)
from bridge.models import Change, Item, SourceState
from bridge.store import SeenKeys, SeenUpdate, SnapshotHashes, SnapshotStore, StaleSnapshot

log = logging.getLogger("pollbridge.poll")

Baseline = Literal["silent", "emit"] | None
"""How a poll baselines (``baseline`` or ``rebaseline``), or None when it diffs."""


class PollContext(Protocol):
    """What :func:`analyse_append` needs to know of the poll (the pipeline's context)."""

    @property
    def source(self) -> SourceConfig: ...
    @property
    def now(self) -> datetime: ...
    @property
    def state(self) -> SourceState | None: ...


@dataclass(frozen=True)
class AppendStep:
    """What one poll of an append source records."""

    entries: list[Item]
    changes: list[Change]
    seen: SeenUpdate
    remembered: int
    """Keys remembered once committed."""
    result: str
    """ok, baseline or rebaseline."""


class TrackedState:
    """Seen keys and missing counts per source, reloaded only when the snapshot version moved.

    Each commit bumps the version, so a cached copy is valid exactly while the store's version
    is the one it was loaded at (or the one the pipeline's own commit produced).
    """

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self._seen: dict[str, SeenKeys] = {}
        self._missing: dict[str, tuple[int, dict[str, int]]] = {}

    async def seen(self, source: str) -> SeenKeys:
        cached = self._seen.get(source)
        if cached is not None and await self.store.snapshot_version(source) == cached.version:
            return cached
        fresh = await self.store.load_seen(source)
        self._seen[source] = fresh
        return fresh

    async def missing(self, source: str, version: int | None = None) -> dict[str, int]:
        """The stored missing counts; ``version`` (when known) spares a round trip."""
        if version is None:
            version = await self.store.snapshot_version(source)
        cached = self._missing.get(source)
        if cached is not None and cached[0] == version:
            return cached[1]
        fresh = await self.store.load_missing(source)
        self._missing[source] = (version, fresh)
        return fresh

    def committed(
        self,
        source: str,
        version: int,
        at: datetime,
        seen: SeenUpdate | None,
        missing: dict[str, int] | None,
    ) -> None:
        """Take what a commit that produced ``version`` wrote, without reading it back."""
        self._missing[source] = (version, dict(missing or {}))
        if seen is None:
            self._seen.pop(source, None)
            return
        cached = self._seen.get(source)
        if cached is None or cached.version != version - 1:
            self._seen.pop(source, None)
            return
        keys = cached.first_seen
        for key in seen.forget:
            keys.pop(key, None)
        for key in seen.add:
            keys.setdefault(key, at)
        self._seen[source] = SeenKeys(version, keys)

    async def pending(self, source: SourceConfig) -> bool:
        """Whether deletions of ``source`` wait for confirmation (``confirm_deletes``)."""
        if source.mode != "snapshot" or source.confirm_deletes < 2:
            return False
        return bool(await self.missing(source.name))

    def forget(self, source: str) -> None:
        self._seen.pop(source, None)
        self._missing.pop(source, None)


def baseline_mode(source: SourceConfig, first: bool, rebaseline: bool) -> Baseline:
    """How this poll baselines (``baseline`` or ``rebaseline``), or None when it diffs."""
    if rebaseline:
        return source.rebaseline
    return source.baseline if first else None


def append_stop(
    source: SourceConfig, seen: SeenKeys, baseline: Baseline
) -> Callable[[list[Item]], bool] | None:
    """The walk's ``stop`` for an append source (None: every page)."""
    if source.page_spec is None:
        return None
    return stop_rule(seen.first_seen, stop_at_seen=source.stop_at_seen, baseline=baseline)


def analyse_append(
    poll: PollContext,
    pages: Sequence[Sequence[Item]] | None,
    seen: SeenKeys,
    baseline: Baseline,
    snapshot: SnapshotHashes,
) -> AppendStep:
    """New entries become changes (none on a silent baseline); seen keys are added and pruned.

    ``snapshot`` is what the commit will be checked against: the seen keys must be of its
    version."""
    source = poll.source
    if seen.version != snapshot.version:
        raise StaleSnapshot(
            source.name,
            f"state of {source.name!r} moved from version {seen.version} to "
            f"{snapshot.version} during the poll",
        )
    entries = unique_entries(pages or [])
    plan = plan_append(seen.first_seen, entries, poll.now, source.seen_window)
    if plan.over_count:
        log.warning(
            "poll %s: the answer holds %d entries, more than remember_count = %d; all are "
            "remembered (forgetting one would make it new again): raise remember_count",
            source.name,
            len(entries),
            source.remember_count,
            extra={"source": source.name},
        )
    changes = (
        []
        if baseline == "silent"
        else append_changes(plan.new, source.event_name, source.ignore_paths)
    )
    update = SeenUpdate([i.key_text for i in plan.new], plan.forget)
    first = poll.state is None or poll.state.fingerprint is None
    result = "ok" if baseline is None else "baseline" if first else "rebaseline"
    return AppendStep(entries, changes, update, plan.remembered, result)
