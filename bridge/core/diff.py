"""Compare a stored snapshot with a new poll: created, updated and deleted items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.core.patch import Ignored, make_patch, make_patch_ignoring
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
        if item.key_text in before:
            _, old = before[item.key_text]
            patch = patch_ignoring(old, item.value, ignore)
            changes.append(
                Change("updated", item.key, item.key_text, old, item.value, patch, item.hash)
            )
        else:
            patch = patch_ignoring(None, item.value, ignore)
            changes.append(
                Change("created", item.key, item.key_text, None, item.value, patch, item.hash)
            )
    for text in plan.deleted:
        key, old = before[text]
        patch = patch_ignoring(old, None, ignore)
        changes.append(Change("deleted", key, text, old, None, patch, None))
    return changes


def patch_ignoring(before: Any, after: Any, ignore: Sequence[JsonPath]) -> list[dict[str, Any]]:
    """The RFC 6902 patch from ``before`` to ``after`` as sent, leaving out the ``ignore`` paths.

    Applied to the real ``before`` it gives the real ``after`` except at ignored paths: an
    ignored member is left out, an ignored array element keeps its place, so every index in
    the patch is one of the real arrays.
    """
    if not ignore:
        return make_patch(before, after)
    old, old_masked = _masked(before, ignore)
    new, new_masked = _masked(after, ignore)
    if old_masked or new_masked:
        return make_patch_ignoring(old, new)
    return make_patch(old, new)


_WHOLE = object()
"""In a tree of ignored locations: everything from here down is ignored."""


def _masked(value: Any, ignore: Sequence[JsonPath]) -> tuple[Any, bool]:
    """``value`` without its ignored members, its ignored array elements wrapped in Ignored.

    Only the containers on the way to an ignored location are copied. The flag says whether
    an element was wrapped.
    """
    if value is None:
        return value, False
    tree: dict[Any, Any] = {}
    for path in ignore:
        for location in path.locate(value):
            if not location:
                return Ignored(value), True
            node = tree
            for step in location[:-1]:
                child = node.setdefault(step, {})
                if child is _WHOLE:
                    break
                node = child
            else:
                node[location[-1]] = _WHOLE
    if not tree:
        return value, False
    return _apply_mask(value, tree)


def _apply_mask(value: Any, tree: dict[Any, Any]) -> tuple[Any, bool]:
    wrapped = False
    if isinstance(value, dict):
        out: Any = dict(value)
        for step, sub in tree.items():
            if step not in out:
                continue
            if sub is _WHOLE:
                del out[step]
            else:
                out[step], inner = _apply_mask(out[step], sub)
                wrapped = wrapped or inner
        return out, wrapped
    if isinstance(value, list):
        out = list(value)
        for step, sub in tree.items():
            if not isinstance(step, int) or step >= len(out):
                continue
            if sub is _WHOLE:
                out[step] = Ignored(out[step])
                wrapped = True
            else:
                out[step], inner = _apply_mask(out[step], sub)
                wrapped = wrapped or inner
        return out, wrapped
    return value, False


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
