"""Turn a decoded API response into keyed items, ready to diff."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeAlias

import orjson

from bridge.core.hashing import check_nestable, hash_item, hash_items
from bridge.core.paths import JsonPath
from bridge.models import Item, ItemKey


class ExtractionFailed(ValueError):
    """The document does not contain what the source's paths describe."""


@dataclass(frozen=True)
class ItemSpec:
    """How to find a source's items, keys, compared fields and kept fields."""

    items: JsonPath
    key: tuple[JsonPath, ...]
    ignore: tuple[JsonPath, ...] = ()
    fields: tuple[JsonPath, ...] = ()


def select_items(doc: Any, items_path: JsonPath) -> list[Any]:
    """The list of raw items ``items_path`` selects; raise ExtractionFailed if it matches nothing.

    A path that ends in ``[*]`` or a filter must find its array: an explicitly empty array is a
    real empty list, a missing one is an error (never "everything was deleted"). A path that
    matches a single array, such as ``$.data``, selects that array's elements.
    """
    container = items_path.container()
    if container is not None:
        found = container.find(doc)
        if not found:
            raise ExtractionFailed(
                f"items path {items_path.text!r} matched nothing: {container.text!r} "
                "is not in the response"
            )
        bad = [v for v in found if not isinstance(v, list)]
        if bad:
            kind = _kind(bad[0])
            raise ExtractionFailed(
                f"items path {items_path.text!r}: {container.text!r} is {kind}, expected an array"
            )
        return items_path.find(doc)
    found = items_path.find(doc)
    if not found:
        array = items_path.element_array()
        arrays = array.find(doc) if array is not None else []
        if arrays and all(a == [] for a in arrays):
            return []  # ``edges[*].node`` over an empty ``edges``: a real empty list
        raise ExtractionFailed(f"items path {items_path.text!r} matched nothing in the response")
    if len(found) == 1 and isinstance(found[0], list):
        return list(found[0])
    return found


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


_MISSING = object()


def _plain_names(path: JsonPath) -> tuple[str, ...] | None:
    """The steps of a path made only of object member names (``$.id``, ``$.a.b``), else None."""
    steps = path.steps
    if steps and all(isinstance(s, str) for s in steps):
        return steps
    return None


def _key_part(value: Any, path: JsonPath, index: int, names: tuple[str, ...] | None = None) -> str:
    if names is not None:
        # The common key, a chain of member names: plain dict lookups, no match lists.
        part = value
        for name in names:
            part = part.get(name, _MISSING) if isinstance(part, dict) else _MISSING
            if part is _MISSING:
                raise ExtractionFailed(f"item #{index} has no key at {path.text!r}")
        if type(part) is str:
            return part
        found = [part]
    else:
        found = path.find(value) if isinstance(value, dict | list) else []
    if not found:
        raise ExtractionFailed(f"item #{index} has no key at {path.text!r}")
    if len(found) > 1:
        raise ExtractionFailed(f"item #{index}: key path {path.text!r} matched {len(found)} values")
    part = found[0]
    if isinstance(part, bool) or not isinstance(part, str | int | float):
        raise ExtractionFailed(
            f"item #{index}: key at {path.text!r} is {_kind(part)}, expected a string or number"
        )
    if isinstance(part, str):
        return part
    if isinstance(part, int):
        return str(part)  # its JSON text, for any size (orjson stops at 64 bits)
    return orjson.dumps(part).decode()


def key_text(key: ItemKey) -> str:
    """The stored form of a key: the string itself, or a JSON array for a composite key."""
    if isinstance(key, str):
        return key
    return orjson.dumps(list(key)).decode()


def project(value: Any, fields: Sequence[JsonPath]) -> Any:
    """Keep only the given simple paths of an item (``fields`` projection)."""
    if not fields or not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for path in fields:
        steps = path.steps
        if steps is None or not all(isinstance(s, str) for s in steps) or not steps:
            continue
        src: Any = value
        for step in steps:
            if not isinstance(src, dict) or step not in src:
                break
            src = src[step]
        else:
            dst = out
            for step in steps[:-1]:
                dst = dst.setdefault(step, {})
            dst[steps[-1]] = src
    return out


def comparable(value: Any, ignore: Sequence[JsonPath]) -> Any:
    """The part of an item that counts for change detection: ``value`` minus ignored paths."""
    for path in ignore:
        value = path.remove_from(value)
    return value


def extract_items(doc: Any, spec: ItemSpec) -> list[Item]:
    """Extract, key and hash every item; raise ExtractionFailed on a missing or repeated key."""
    return list(iter_items(select_items(doc, spec.items), spec))


def iter_items(raw: Iterable[Any], spec: ItemSpec) -> Iterator[Item]:
    """Key and hash each raw item as it comes (from a list or a streaming parse).

    Raises ExtractionFailed on a missing or repeated key, naming the item's index.
    """
    for key, text, value, digest in iter_keyed(raw, spec, {}):
        yield Item(key, text, value, digest)


Keyed: TypeAlias = tuple[ItemKey, str, Any, str]
"""What :func:`iter_keyed` gives per item: key, key text, (projected) value and hash."""


BATCH_ITEMS = 2048
"""Items keyed and hashed together on the common path (list comprehensions, not a loop)."""


def iter_keyed(
    raw: Iterable[Any], spec: ItemSpec, seen: dict[str, int], batch_items: int = BATCH_ITEMS
) -> Iterator[Keyed]:
    """:func:`iter_items` without the :class:`Item`: the parts of one, as a tuple.

    ``seen`` is filled with each key text and the index of its item, so a caller that needs
    the set of keys (the deleted ones are those it lacks) has it without a second set.
    Raises ExtractionFailed on a missing or repeated key, naming the item's index.
    """
    key_paths = [(p, _plain_names(p)) for p in spec.key]
    # the common key, one member name (``$.id``) holding a string: one dict lookup
    names = key_paths[0][1] if len(key_paths) == 1 else None
    name = names[0] if names and len(names) == 1 and not spec.fields and not spec.ignore else None
    if name is None:
        yield from _keyed_one_by_one(enumerate(raw), spec, seen)
        return
    items = iter(raw)
    index = 0
    while batch := list(islice(items, batch_items)):
        texts: list[Any] = [v.get(name) if type(v) is dict else None for v in batch]
        digests = None
        if all(type(t) is str for t in texts) and seen.keys().isdisjoint(texts):
            before = len(seen)
            seen.update(zip(texts, range(index, index + len(batch)), strict=True))
            if len(seen) - before == len(batch):
                with contextlib.suppress(TypeError):  # one by one, it names the item
                    digests = hash_items(batch)
            if digests is None:
                for text in texts:
                    seen.pop(text, None)
        if digests is None:  # a missing, repeated or odd key, or an item too deep
            yield from _keyed_one_by_one(enumerate(batch, index), spec, seen)
        else:
            yield from zip(texts, texts, batch, digests, strict=True)
        index += len(batch)


def _keyed_one_by_one(
    raw: Iterable[tuple[int, Any]], spec: ItemSpec, seen: dict[str, int]
) -> Iterator[Keyed]:
    key_paths = [(p, _plain_names(p)) for p in spec.key]
    composite = len(key_paths) > 1
    key_path, key_names = key_paths[0]
    fields, ignore = spec.fields, spec.ignore
    first_index = seen.setdefault
    for index, value in raw:
        if fields:
            value = project(value, fields)
        if composite:
            key: ItemKey = tuple(_key_part(value, p, index, names) for p, names in key_paths)
            text = key_text(key)
        else:
            key = text = _key_part(value, key_path, index, key_names)
        if first_index(text, index) != index:
            raise ExtractionFailed(
                f"key {text!r} appears twice in one poll (items #{seen[text]} and #{index})"
            )
        try:
            if ignore:
                digest = hash_item(comparable(value, ignore))
                check_nestable(value)
            else:
                digest = hash_item(value)
        except TypeError as exc:  # orjson's nesting limit: the item could never be sent
            why = "it nests too deeply" if "ecursion" in str(exc) else str(exc)
            raise ExtractionFailed(
                f"item #{index} (key {text!r}) cannot be hashed and sent as a webhook: {why}"
            ) from exc
        yield key, text, value, digest
