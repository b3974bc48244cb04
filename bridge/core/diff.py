"""Compare a stored snapshot with a new poll: created, updated and deleted items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.core.extract import comparable
from bridge.core.patch import make_patch
from bridge.core.paths import JsonPath
from bridge.models import Change, Item, ItemKey


@dataclass(frozen=True)
class DiffPlan:
    """Which keys changed, found from hashes alone (no item bodies needed)."""

    created: list[str]
    updated: list[str]
    deleted: list[str]

    @property
    def empty(self) -> bool:
        return not (self.created or self.updated or self.deleted)

    @property
    def needs_before(self) -> list[str]:
        """Keys whose stored item is needed to build the changes."""
        return self.updated + self.deleted


def plan_diff(old_hashes: Mapping[str, str], new_items: Sequence[Item]) -> DiffPlan:
    """Classify keys by comparing stored hashes with the new items' hashes.

    Created and updated keys come in the order of the response; deleted keys sorted.
    """
    created: list[str] = []
    updated: list[str] = []
    new_keys = set()
    for item in new_items:
        new_keys.add(item.key_text)
        old = old_hashes.get(item.key_text)
        if old is None:
            created.append(item.key_text)
        elif old != item.hash:
            updated.append(item.key_text)
    deleted = sorted(k for k in old_hashes if k not in new_keys)
    return DiffPlan(created, updated, deleted)


def build_changes(
    plan: DiffPlan,
    new_items: Sequence[Item],
    before: Mapping[str, tuple[ItemKey, Any]],
    ignore: Sequence[JsonPath] = (),
) -> list[Change]:
    """Turn a plan into changes with before, after and an RFC 6902 patch (ignored paths left out).

    ``before`` maps each updated or deleted key text to its stored (key, item).
    Order: created and updated in response order, then deleted by key.
    """
    wanted = set(plan.created) | set(plan.updated)
    changes: list[Change] = []
    for item in new_items:
        if item.key_text not in wanted:
            continue
        after_cmp = comparable(item.value, ignore)
        if item.key_text in before:
            _, old = before[item.key_text]
            patch = make_patch(comparable(old, ignore), after_cmp)
            changes.append(
                Change("updated", item.key, item.key_text, old, item.value, patch, item.hash)
            )
        else:
            patch = make_patch(None, after_cmp)
            changes.append(
                Change("created", item.key, item.key_text, None, item.value, patch, item.hash)
            )
    for text in plan.deleted:
        key, old = before[text]
        patch = make_patch(comparable(old, ignore), None)
        changes.append(Change("deleted", key, text, old, None, patch, None))
    return changes


def diff_snapshots(
    old: Mapping[str, tuple[ItemKey, Any, str]],
    new_items: Sequence[Item],
    ignore: Sequence[JsonPath] = (),
) -> list[Change]:
    """Plan and build in one step, for callers that hold the whole old snapshot in memory.

    ``old`` maps key text to (key, item, hash).
    """
    plan = plan_diff({k: v[2] for k, v in old.items()}, new_items)
    before = {k: (old[k][0], old[k][1]) for k in plan.needs_before}
    return build_changes(plan, new_items, before, ignore)
