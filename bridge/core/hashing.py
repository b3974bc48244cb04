"""Canonical JSON and the hash that decides whether an item changed."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

_SORTED = orjson.OPT_SORT_KEYS


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return orjson.dumps(value, option=_SORTED)


def hash_value(value: Any) -> str:
    """A 128-bit hex digest of the canonical JSON of ``value``; key order never counts."""
    return hashlib.blake2b(orjson.dumps(value, option=_SORTED), digest_size=16).hexdigest()


ENVELOPE_DEPTH = 4
"""How deep a webhook body nests an item: envelope > data > changes > operation > value."""


def hash_item(value: Any) -> str:
    """:func:`hash_value` of an item, which also proves it fits in a webhook body.

    orjson encodes at most 254 levels of nesting, so an item nesting more than
    ``254 - ENVELOPE_DEPTH`` levels could never be sent: TypeError. Only a text with that many
    opening brackets can nest that deep, so only such an item pays for the full check (and
    only a text longer than that many bytes pays for counting them).
    """
    text = orjson.dumps(value, option=_SORTED)
    if len(text) > _NESTABLE_LEVELS and text.count(b"[") + text.count(b"{") > _NESTABLE_LEVELS:
        check_nestable(value)
    return hashlib.blake2b(text, digest_size=16).hexdigest()


def hash_items(values: Sequence[Any]) -> list[str]:
    """:func:`hash_item` of each value (TypeError as it raises), in two comprehensions."""
    texts = [orjson.dumps(v, option=_SORTED) for v in values]
    if max(map(len, texts), default=0) > _NESTABLE_LEVELS:
        for text, value in zip(texts, values, strict=True):
            if (
                len(text) > _NESTABLE_LEVELS
                and text.count(b"[") + text.count(b"{") > _NESTABLE_LEVELS
            ):
                check_nestable(value)
    return [hashlib.blake2b(t, digest_size=16).hexdigest() for t in texts]


_NESTABLE_LEVELS = 254 - ENVELOPE_DEPTH - 10
"""Below orjson's limit less the envelope, with a margin: more brackets run the full check."""


def check_nestable(value: Any) -> None:
    """Raise TypeError when ``value`` could not be encoded inside a webhook body."""
    wrapped: Any = value
    for _ in range(ENVELOPE_DEPTH):
        wrapped = [wrapped]
    orjson.dumps(wrapped)
