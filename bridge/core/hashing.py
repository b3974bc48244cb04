"""Canonical JSON and the hash that decides whether an item changed."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

_SORTED = orjson.OPT_SORT_KEYS


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return orjson.dumps(value, option=_SORTED)


def hash_value(value: Any) -> str:
    """A 128-bit hex digest of the canonical JSON of ``value``; key order never counts."""
    return hashlib.blake2b(orjson.dumps(value, option=_SORTED), digest_size=16).hexdigest()
