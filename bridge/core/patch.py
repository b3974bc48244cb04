"""RFC 6902 JSON Patch from one JSON value to another.

Written here rather than taken from ``jsonpatch``: its list diff emits ``move`` operations whose
result depends on applying them in order, and we want a patch that is small, deterministic and
trivially correct (objects key by key, equal-length arrays index by index, anything else replaced).
"""

from __future__ import annotations

import copy
import math
from typing import Any


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _same_scalar(a: Any, b: Any) -> bool:
    # Same rule as the canonical hash: 1, 1.0 and True are three different JSON texts,
    # and so are 0.0 and -0.0.
    if type(a) is float and type(b) is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return type(a) is type(b) and a == b


def make_patch(before: Any, after: Any) -> list[dict[str, Any]]:
    """The operations that turn ``before`` into ``after``; empty when they are JSON-equal."""
    ops: list[dict[str, Any]] = []
    _diff(before, after, "", ops)
    return ops


def _diff(a: Any, b: Any, path: str, ops: list[dict[str, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            if k not in b:
                ops.append({"op": "remove", "path": f"{path}/{_escape(k)}"})
        for k, v in b.items():
            sub = f"{path}/{_escape(k)}"
            if k not in a:
                ops.append({"op": "add", "path": sub, "value": v})
            else:
                _diff(a[k], v, sub, ops)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}/{i}", ops)
        return
    if isinstance(a, dict | list) or isinstance(b, dict | list) or not _same_scalar(a, b):
        ops.append({"op": "replace", "path": path, "value": b})


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
