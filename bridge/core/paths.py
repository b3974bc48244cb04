"""JSONPath compiled once, with a fast path of plain dict/list access for simple paths.

jsonpath-ng's ``find`` costs microseconds per call; ``$.id`` or ``$.data[*]`` need only a
dict lookup, so those are evaluated by hand and everything else goes to jsonpath-ng.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from jsonpath_ng import jsonpath
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext.filter import Filter
from jsonpath_ng.ext.parser import parse as _ext_parse

_WILDCARD = object()
_NAME = r"[A-Za-z_][A-Za-z0-9_\-]*"
_STEP = re.compile(rf"\.({_NAME})|\[\*\]|\[(\d+)\]|\['([^'\\]*)'\]|\[\"([^\"\\]*)\"\]")


def _fast_steps(text: str) -> tuple[Any, ...] | None:
    if not text.startswith("$"):
        return None
    steps: list[Any] = []
    pos = 1
    while pos < len(text):
        m = _STEP.match(text, pos)
        if not m:
            return None
        if m.group(1) is not None:
            steps.append(m.group(1))
        elif m.group(2) is not None:
            steps.append(int(m.group(2)))
        elif m.group(3) is not None:
            steps.append(m.group(3))
        elif m.group(4) is not None:
            steps.append(m.group(4))
        else:
            steps.append(_WILDCARD)
        pos = m.end()
    return tuple(steps)


@dataclass(frozen=True)
class JsonPath:
    """A compiled JSONPath expression. Build with :func:`compile_path`."""

    text: str
    steps: tuple[Any, ...] | None = field(repr=False)
    expr: Any = field(repr=False, compare=False)

    def find(self, doc: Any) -> list[Any]:
        """Every value the path matches in ``doc``, in document order."""
        if self.steps is None:
            return [m.value for m in self.expr.find(doc)]
        current = [doc]
        for step in self.steps:
            nxt: list[Any] = []
            for value in current:
                if step is _WILDCARD:
                    if isinstance(value, list):
                        nxt.extend(value)
                    elif isinstance(value, dict):
                        nxt.extend(value.values())
                elif isinstance(step, int):
                    if isinstance(value, list) and -len(value) <= step < len(value):
                        nxt.append(value[step])
                elif isinstance(value, dict) and step in value:
                    nxt.append(value[step])
            current = nxt
        return current

    def is_simple(self) -> bool:
        return self.steps is not None

    def container(self) -> JsonPath | None:
        """For a path ending in ``[*]`` or a filter, the path of the array it selects from."""
        if self.steps is not None:
            if self.steps and self.steps[-1] is _WILDCARD:
                return JsonPath(self.text.removesuffix("[*]"), self.steps[:-1], None)
            return None
        node = self.expr
        if isinstance(node, jsonpath.Child) and isinstance(node.right, jsonpath.Slice | Filter):
            return JsonPath(str(node.left), None, node.left)
        return None

    def remove_from(self, doc: Any) -> Any:
        """A copy of ``doc`` with every match of this path removed; ``doc`` is left untouched."""
        if self.steps is not None and self.steps and all(isinstance(s, str) for s in self.steps):
            return _remove_fields(doc, self.steps)
        if not self.find(doc):
            return doc
        return self.expr.filter(lambda _v: True, copy.deepcopy(doc))


def _remove_fields(doc: Any, steps: tuple[Any, ...]) -> Any:
    if not isinstance(doc, dict) or steps[0] not in doc:
        return doc
    head, rest = steps[0], steps[1:]
    out = dict(doc)
    if rest:
        out[head] = _remove_fields(doc[head], rest)
    else:
        del out[head]
    return out


def compile_path(text: str) -> JsonPath:
    """Compile a JSONPath once; raise ValueError with the reason when it is not valid."""
    if not isinstance(text, str) or not text.strip().startswith("$"):
        raise ValueError(f"invalid JSONPath {text!r}: it must start with '$'")
    text = text.strip()
    try:
        expr = _ext_parse(text)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise ValueError(f"invalid JSONPath {text!r}: {exc}") from exc
    steps = _fast_steps(text)
    return JsonPath(text, steps, expr)
