"""What a poll's commit needs from a response's items: the plan and the items to write.

Two places analyse a response: the daemon's process (small responses, paginated lists:
:func:`plan_items` over the pages' :class:`Item`\\ s) and an analysis worker process (large
responses, see :mod:`bridge.analysis_worker`: :func:`plan_raw` over the raw items, which
builds an :class:`Item` only for what the commit writes). Both key and hash every item with
:func:`bridge.core.extract.iter_keyed`, so the two give the same keys, hashes and plan by
construction; only the way the raw items are parsed differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.core.diff import DiffPlan
from bridge.core.extract import ItemSpec, iter_keyed, select_items
from bridge.models import Item


@dataclass(frozen=True)
class Planned:
    """A response's items compared with the previous snapshot's hashes."""

    item_count: int
    plan: DiffPlan
    upserts: list[Item]
    """The created and updated items in response order; every item when ``keep_all``."""


@dataclass(frozen=True)
class SnapshotStep:
    """How a source's snapshot hashes went from ``from_version`` to the next version: the keys
    removed, then the (key text, hash) pairs set, in that order (what a commit wrote)."""

    from_version: int
    deleted: tuple[str, ...]
    upserted: tuple[tuple[str, str], ...]


def plan_items(
    items: Iterable[Item],
    old_hashes: Mapping[str, str],
    *,
    keep_all: bool = False,
    emit: Callable[[Item], None] | None = None,
) -> Planned:
    """Classify ``items`` against ``old_hashes`` in one pass, keeping only what is written.

    Created and updated keys come in response order, deleted keys sorted (as
    :func:`bridge.core.diff.plan_diff`). ``keep_all`` (a baseline) keeps every item as an
    upsert; otherwise the unchanged items are dropped as they pass, so a streaming caller
    holds only the changed ones. With ``emit`` each upsert is handed to it as it is found
    instead of being kept (the result's ``upserts`` is then empty).
    """
    created: list[str] = []
    updated: list[str] = []
    upserts: list[Item] = []
    keep = upserts.append if emit is None else emit
    new_keys: set[str] = set()
    count = 0
    for item in items:
        count += 1
        text = item.key_text
        new_keys.add(text)
        old = old_hashes.get(text)
        if old is None:
            created.append(text)
            keep(item)
        elif old != item.hash:
            updated.append(text)
            keep(item)
        elif keep_all:
            keep(item)
    deleted = sorted(old_hashes.keys() - new_keys)
    return Planned(count, DiffPlan(created, updated, deleted), upserts)


def plan_raw(
    raw: Iterable[Any],
    spec: ItemSpec,
    old_hashes: Mapping[str, str],
    *,
    keep_all: bool = False,
    emit: Callable[[Item], None] | None = None,
) -> Planned:
    """``plan_items(iter_items(raw, spec), ...)`` in one pass, as a worker runs it.

    The same plan, but an unchanged item never becomes an :class:`Item` (a worker drops
    it), and the keys found for the duplicate check are the ones the deleted keys are
    worked out from: at 100k items this is a third of the per-item cost.
    """
    created: list[str] = []
    updated: list[str] = []
    upserts: list[Item] = []
    keep = upserts.append if emit is None else emit
    seen: dict[str, int] = {}
    old_hash = old_hashes.get
    for key, text, value, digest in iter_keyed(raw, spec, seen):
        old = old_hash(text)
        if old == digest:
            if keep_all:
                keep(Item(key, text, value, digest))
            continue
        if old is None:
            created.append(text)
        else:
            updated.append(text)
        keep(Item(key, text, value, digest))
    deleted = sorted(old_hashes.keys() - seen.keys())
    return Planned(len(seen), DiffPlan(created, updated, deleted), upserts)


def plan_document(
    doc: Any,
    spec: ItemSpec,
    old_hashes: Mapping[str, str],
    *,
    keep_all: bool = False,
    emit: Callable[[Item], None] | None = None,
) -> Planned:
    """:func:`plan_raw` over the items of a whole decoded document."""
    raw = select_items(doc, spec.items)
    return plan_raw(raw, spec, old_hashes, keep_all=keep_all, emit=emit)


def plan_from_upserts(
    item_count: int, upserts: list[Item], deleted: list[str], old_hashes: Mapping[str, str]
) -> Planned:
    """Rebuild the :class:`Planned` a worker computed from what it sent back.

    The worker sends the upserts and the deleted keys only; which upsert was created and which
    updated follows from the same old hashes it compared with (an upsert with an unchanged
    hash is a baseline's unchanged item).
    """
    created: list[str] = []
    updated: list[str] = []
    for item in upserts:
        old = old_hashes.get(item.key_text)
        if old is None:
            created.append(item.key_text)
        elif old != item.hash:
            updated.append(item.key_text)
    return Planned(item_count, DiffPlan(created, updated, deleted), upserts)
