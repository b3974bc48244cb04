"""The memory store's sources and snapshots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from bridge.core import source_state
from bridge.core.ids import new_event_id
from bridge.errors import StaleSnapshot
from bridge.models import Event, ItemKey, SourceState
from bridge.store._rows import SOURCE_FIELDS
from bridge.store.base import PollCommit, SeenKeys, SnapshotHashes
from bridge.store.memory._base import MemoryBase, StoredItem, copy, copy_event, copy_field, required


class MemorySnapshots(MemoryBase):
    """Sources and snapshots (:class:`bridge.store.base.SnapshotStore`)."""

    def _source(self, name: str) -> SourceState | None:
        row = self._sources.get(name)
        if row is None:
            return None
        return SourceState(name=name, **{k: copy_field(k, v) for k, v in row.items()})

    def _upsert_source(self, name: str, values: Mapping[str, Any]) -> None:
        row = self._sources.setdefault(name, {})
        for key, value in values.items():
            if key == "snapshot_version":
                self._versions[name] = int(value)
            else:
                row[key] = copy_field(key, value)

    async def get_source_state(self, source: str) -> SourceState | None:
        self._check_open()
        return self._source(source)

    async def list_source_states(self) -> list[SourceState]:
        self._check_open()
        return [s for name in sorted(self._sources) if (s := self._source(name)) is not None]

    async def load_hashes(self, source: str, *, list_hashes: bool = False) -> SnapshotHashes:
        self._check_open()
        items = self._items.get(source, {})
        listed = None
        if list_hashes:
            listed = {k: it.list_hash for k, it in items.items() if it.list_hash is not None}
        return SnapshotHashes(
            self._versions.get(source, 0), {k: it.hash for k, it in items.items()}, listed
        )

    async def snapshot_version(self, source: str) -> int:
        self._check_open()
        return self._versions.get(source, 0)

    async def load_items(
        self, source: str, key_texts: Sequence[str]
    ) -> dict[str, tuple[ItemKey, Any]]:
        self._check_open()
        items = self._items.get(source, {})
        return {k: (items[k].key, orjson.loads(items[k].value)) for k in key_texts if k in items}

    async def load_seen(self, source: str) -> SeenKeys:
        self._check_open()
        oldest_first = sorted(self._seen.get(source, {}).items(), key=lambda kv: (kv[1], kv[0]))
        return SeenKeys(self._versions.get(source, 0), dict(oldest_first))

    async def load_missing(self, source: str) -> dict[str, int]:
        self._check_open()
        return dict(self._missing.get(source, {}))

    async def commit_poll(self, commit: PollCommit) -> list[Event]:
        self._check_open()
        version = self._versions.get(commit.source, 0)
        if commit.expected_version is not None and version != commit.expected_version:
            raise StaleSnapshot(
                commit.source,
                f"snapshot of {commit.source!r} moved from version "
                f"{commit.expected_version} to {version} during the poll",
            )
        # everything is built before anything is stored: the commit is all or nothing
        upserts = {
            it.key_text: StoredItem(
                it.key if isinstance(it.key, str) else tuple(it.key),
                it.hash,
                orjson.dumps(it.value),
                it.list_hash,
            )
            for it in commit.upserts
        }
        events = [
            Event(
                new_event_id(commit.polled_at),
                self._next_seq + n,
                commit.source,
                change.key,
                change.type,
                required(commit.polled_at),
                copy(change.before),
                copy(change.after),
                copy(change.changes),
                change.name,
            )
            for n, change in enumerate(commit.changes)
        ]
        routes = list(zip(events, commit.changes, commit.routes, strict=True))
        fields_ = source_state.after_commit(
            polled_at=commit.polled_at,
            duration_s=commit.duration_s,
            result=commit.result,
            item_count=commit.item_count,
            fingerprint=commit.fingerprint,
            snapshot_version=version + 1,
            validators=commit.validators,
            cursor=commit.cursor,
            reconciled_at=commit.reconciled_at,
        )
        items = self._items.setdefault(commit.source, {})
        items.update(upserts)
        for key_text in commit.deletes:
            items.pop(key_text, None)
        self._write_tracked(commit)
        self._next_seq += len(events)
        at = required(commit.polled_at)
        for event, change, listeners in routes:
            self._events[event.seq] = event
            self._event_keys[event.seq] = change.key_text
            for listener in listeners:
                self._add_delivery(event.seq, listener, commit.source, change.key_text, at)
        self._upsert_source(commit.source, fields_)
        return [copy_event(e) for e in events]

    def _write_tracked(self, commit: PollCommit) -> None:
        if commit.seen is None:
            self._seen.pop(commit.source, None)
        else:
            seen = self._seen.setdefault(commit.source, {})
            for key_text in commit.seen.forget:
                seen.pop(key_text, None)
            at = required(commit.polled_at)
            for key_text in commit.seen.add:
                seen.setdefault(key_text, at)
        if commit.missing:
            self._missing[commit.source] = dict(commit.missing)
        else:
            self._missing.pop(commit.source, None)

    async def record_poll_failure(
        self,
        source: str,
        at: datetime,
        duration_s: float,
        error: str,
        *,
        result: str = "error",
        not_before: datetime | None = None,
    ) -> SourceState:
        self._check_open()
        previous = self._sources.get(source, {}).get("consecutive_failures", 0)
        self._upsert_source(
            source,
            source_state.after_failure(
                previous_failures=previous,
                at=at,
                duration_s=duration_s,
                error=error,
                result=result,
                not_before=not_before,
            ),
        )
        state = self._source(source)
        assert state is not None  # noqa: S101 - just written
        return state

    async def record_poll_unchanged(
        self,
        source: str,
        at: datetime,
        duration_s: float,
        *,
        result: str = "ok",
        validators: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self._check_open()
        self._upsert_source(
            source,
            source_state.after_unchanged(
                at=at, duration_s=duration_s, result=result, validators=validators
            ),
        )

    async def update_source_state(self, source: str, **values: Any) -> None:
        self._check_open()
        unknown = set(values) - set(SOURCE_FIELDS)
        if unknown:
            raise ValueError(f"unknown source state fields: {sorted(unknown)}")
        self._upsert_source(source, values)
