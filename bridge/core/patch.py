"""RFC 6902 JSON Patch from one JSON value to another.

Written here rather than taken from ``jsonpatch``: its list diff emits ``move`` operations whose
result depends on applying them in order, and we want a patch that is small, deterministic and
trivially correct (objects key by key, equal-length arrays index by index, anything else replaced).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _same_scalar(a: Any, b: Any) -> bool:
    # Same rule as the canonical hash: 1, 1.0 and True are three different JSON texts,
    # and so are 0.0 and -0.0.
    if type(a) is float and type(b) is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return type(a) is type(b) and a == b


class Ignored:
    """An array element an ``ignore`` path matches, kept in place so that indices stay those of
    the real array. Two at the same index are never compared; a value sent unwraps it.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Ignored({self.value!r})"


def make_patch(before: Any, after: Any) -> list[dict[str, Any]]:
    """The operations that turn ``before`` into ``after``; empty when they are JSON-equal."""
    ops: list[dict[str, Any]] = []
    _diff(before, after, "", ops, _as_is)
    return ops


def make_patch_ignoring(before: Any, after: Any) -> list[dict[str, Any]]:
    """:func:`make_patch` for values holding :class:`Ignored` elements.

    The patch turns the real ``before`` into the real ``after`` everywhere but at elements
    ignored on both sides; the values it carries hold the real elements.
    """
    ops: list[dict[str, Any]] = []
    _diff(before, after, "", ops, _unwrap)
    return ops


def _as_is(value: Any) -> Any:
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, Ignored):
        return value.value
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return value


def _diff(a: Any, b: Any, path: str, ops: list[dict[str, Any]], real: Callable[[Any], Any]) -> None:
    if isinstance(a, Ignored) or isinstance(b, Ignored):
        if isinstance(a, Ignored) and isinstance(b, Ignored):
            return
        # ignored on one side only: the element changed, compare what is really there
        a, b = _unwrap(a), _unwrap(b)
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            if k not in b:
                ops.append({"op": "remove", "path": f"{path}/{_escape(k)}"})
        for k, v in b.items():
            sub = f"{path}/{_escape(k)}"
            if k not in a:
                ops.append({"op": "add", "path": sub, "value": real(v)})
            else:
                _diff(a[k], v, sub, ops, real)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}/{i}", ops, real)
        return
    if isinstance(a, dict | list) or isinstance(b, dict | list) or not _same_scalar(a, b):
        ops.append({"op": "replace", "path": path, "value": real(b)})


def apply_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """Apply the subset of RFC 6902 that :func:`make_patch` emits; returns a new value."""
    doc = copy.deepcopy(doc)
    for op in ops:
        path = op["path"]
        if path == "":
            doc = copy.deepcopy(op["value"])
            continue
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
        parent = doc
        for t in tokens[:-1]:
            parent = parent[int(t)] if isinstance(parent, list) else parent[t]
        last = tokens[-1]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if op["op"] == "remove":
                del parent[idx]
            elif op["op"] == "add":
                parent.insert(idx, copy.deepcopy(op["value"]))
            else:
                parent[idx] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[last]
        else:
            parent[last] = copy.deepcopy(op["value"])
    return doc
