"""JSONPath compiled once, with a fast path of plain dict/list access for simple paths.

A path is first read against the RFC 9535 grammar (bridge/core/_pathsyntax.py), which decodes
its names and refuses what is invalid or unsupported, then handed to jsonpath-ng in a form it
reads exactly. jsonpath-ng's ``find`` costs microseconds per call; ``$.id`` or ``$.data[*]``
need only a dict lookup, so those are evaluated by hand and everything else by jsonpath-ng.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from jsonpath_ng import jsonpath
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext.parser import parse as _ext_parse

from bridge.core._pathsyntax import PathSyntaxError, Segment, parse_segments, render_for_jsonpath_ng

_BLANKS = " \t\n\r"

_WILDCARD = object()


def _fast_steps(segments: list[Segment]) -> tuple[Any, ...] | None:
    """The steps of a path made of names, non-negative indices and ``[*]``, else None."""
    steps: list[Any] = []
    for seg in segments:
        if seg.descendant:
            return None
        plain_index = seg.kind == "index" and isinstance(seg.value, int) and seg.value >= 0
        if seg.kind == "name" or plain_index:
            steps.append(seg.value)
        elif seg.kind == "wildcard" and seg.bracketed:
            steps.append(_WILDCARD)
        else:
            return None
    return tuple(steps)


@dataclass(frozen=True)
class JsonPath:
    """A compiled JSONPath expression. Build with :func:`compile_path`."""

    text: str
    steps: tuple[Any, ...] | None = field(repr=False)
    expr: Any = field(repr=False, compare=False)
    segments: tuple[Segment, ...] = field(default=(), repr=False, compare=False)

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

    def array_members(self) -> tuple[str, ...] | None:
        """For ``$[*]`` or ``$.a.b[*]``: the member names leading to the array, else None."""
        steps = self.steps
        if not steps or steps[-1] is not _WILDCARD:
            return None
        names = steps[:-1]
        if not all(isinstance(s, str) for s in names):
            return None
        return names

    def container(self) -> JsonPath | None:
        """For a path ending in ``[*]``, a slice or a filter, the path of the array it reads."""
        return self._container

    @cached_property
    def _container(self) -> JsonPath | None:
        if not self.segments:
            return None
        last = self.segments[-1]
        if last.descendant or not (
            last.kind in ("slice", "filter") or (last.kind == "wildcard" and last.bracketed)
        ):
            return None
        return compile_path(self.text[: last.start].rstrip(_BLANKS))

    def element_array(self) -> JsonPath | None:
        """For ``a.b[*].c.d`` (names after the last ``[*]``), the path of the array ``a.b``.

        GraphQL connections list ``edges[*].node``: an empty ``edges`` is an empty list, not a
        path that matched nothing.
        """
        return self._element_array

    @cached_property
    def _element_array(self) -> JsonPath | None:
        segments = self.segments
        for index in range(len(segments) - 1, -1, -1):
            seg = segments[index]
            if seg.kind == "wildcard" and seg.bracketed and not seg.descendant:
                rest = segments[index + 1 :]
                if rest and all(r.kind == "name" and not r.descendant for r in rest):
                    return compile_path(self.text[: seg.start].rstrip(_BLANKS))
                return None
        return None

    def locate(self, doc: Any) -> list[tuple[str | int, ...]]:
        """Where each match is: the member names and array indices leading to it from ``doc``.

        Indices are those of the real arrays, never negative.
        """
        if self.steps is not None:
            return _locate_steps(doc, self.steps)
        return [_location(match) for match in self.expr.find(doc)]

    def remove_from(self, doc: Any) -> Any:
        """A copy of ``doc`` with every match of this path removed; ``doc`` is left untouched."""
        if self.steps is not None and self.steps and all(isinstance(s, str) for s in self.steps):
            return _remove_fields(doc, self.steps)
        if not self.find(doc):
            return doc
        return self.expr.filter(lambda _v: True, copy.deepcopy(doc))


def _locate_steps(doc: Any, steps: tuple[Any, ...]) -> list[tuple[str | int, ...]]:
    current: list[tuple[tuple[str | int, ...], Any]] = [((), doc)]
    for step in steps:
        nxt: list[tuple[tuple[str | int, ...], Any]] = []
        for where, value in current:
            if step is _WILDCARD:
                if isinstance(value, list):
                    nxt.extend(((*where, i), v) for i, v in enumerate(value))
                elif isinstance(value, dict):
                    nxt.extend(((*where, k), v) for k, v in value.items())
            elif isinstance(step, int):
                if isinstance(value, list) and step < len(value):
                    nxt.append(((*where, step), value[step]))
            elif isinstance(value, dict) and step in value:
                nxt.append(((*where, step), value[step]))
        current = nxt
    return [where for where, _ in current]


def _location(match: Any) -> tuple[str | int, ...]:
    """The steps from the root to a jsonpath-ng match, read from its chain of contexts."""
    steps: list[str | int] = []
    datum = match
    while datum is not None and datum.context is not None:
        parent = datum.context.value
        steps[:0] = _node_steps(datum.path, parent)
        datum = datum.context
    return tuple(steps)


def _node_steps(node: Any, parent: Any) -> list[str | int]:
    if isinstance(node, jsonpath.Index):
        index: int = node.indices[0]  # one index: unions are refused at compile
        return [index + len(parent) if index < 0 else index]
    if isinstance(node, jsonpath.Fields):
        return [node.fields[0]]
    return []


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
    """Compile a JSONPath once; raise ValueError naming the path and what is wrong with it.

    The dialect is RFC 9535 without unions, ``!`` and function extensions (refused with a
    message saying so), filters evaluated by jsonpath-ng; see docs/configuration.md.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid JSONPath {text!r}: it must be a string")
    try:
        segments = parse_segments(text)
    except PathSyntaxError as exc:
        raise ValueError(f"invalid JSONPath {text!r}: {exc}") from exc
    try:
        expr = _ext_parse(render_for_jsonpath_ng(segments))
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise ValueError(f"invalid JSONPath {text!r}: {exc}") from exc
    return JsonPath(text, _fast_steps(segments), expr, tuple(segments))
