"""Which listeners receive a change: ``sources``, ``events``, ``on_fields`` and ``match``, ANDed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jsonpath_ng import jsonpath
from jsonpath_ng.ext.filter import Filter

from bridge.core.paths import JsonPath, compile_path
from bridge.core.payload import change_envelope
from bridge.models import Change

_POINTER = re.compile(r"^(/([^~/]|~[01])*)+$")


def check_pointer(text: str) -> str:
    """Validate an RFC 6901 JSON Pointer naming a field (``/status``, ``/a~1b``); return it."""
    if not isinstance(text, str) or not text.startswith("/"):
        hint = (
            " (a JSONPath; write it as a JSON Pointer, e.g. /status)"
            if str(text)[:1] == "$"
            else ""
        )
        raise ValueError(f"{text!r} is not a JSON Pointer to a field: it must start with '/'{hint}")
    if not _POINTER.match(text):
        raise ValueError(
            f"{text!r} is not a valid JSON Pointer: '~' must be followed by 0 ('~') or 1 ('/')"
        )
    return text


def touches(pointer: str, patch: Sequence[dict[str, Any]]) -> bool:
    """True when an operation of ``patch`` changed the value at ``pointer``, at or below it.

    An operation on a parent (the whole ``/shipping`` replaced, or the root) counts as well:
    the field may have changed with it.
    """
    for op in patch:
        path = op.get("path", "")
        if (
            path == pointer
            or path.startswith(pointer + "/")
            or pointer.startswith(path + "/")
            or path == ""
        ):
            return True
    return False


class _SelfFilter(Filter):
    """``[?(…)]`` that, on an object, also tests the object itself.

    jsonpath-ng follows RFC 9535, where a filter selects among an object's *members*, so
    ``$.data.after[?(@.total > 100)]`` would look at ``after``'s values. Listeners write
    filters the way most JSONPath tools read them: the object passes when it matches.
    """

    def find(self, datum: Any) -> list[Any]:
        datum = jsonpath.DatumInContext.wrap(datum)
        found: list[Any] = list(super().find(datum))  # type: ignore[no-untyped-call]
        if isinstance(datum.value, dict) and all(e.find(datum) for e in self.expressions):
            found.insert(0, datum)
        return found


def _with_self_filters(node: Any) -> Any:
    if isinstance(node, Filter) and not isinstance(node, _SelfFilter):
        return _SelfFilter(node.expressions)
    for attr in ("left", "right"):
        child = getattr(node, attr, None)
        if isinstance(child, jsonpath.JSONPath):
            setattr(node, attr, _with_self_filters(child))
    return node


@dataclass(frozen=True)
class EventMatch:
    """A compiled ``match`` expression: an event passes when it selects anything."""

    text: str
    expr: Any = field(repr=False, compare=False)

    def matches(self, envelope: dict[str, Any]) -> bool:
        return bool(self.expr.find(envelope))


def compile_match(text: str) -> EventMatch:
    """Compile a ``match`` JSONPath once; raise ValueError with the reason when it is invalid."""
    path: JsonPath = compile_path(text)
    return EventMatch(path.text, _with_self_filters(path.expr))


@dataclass(frozen=True)
class ListenerRoute:
    """A listener's filters, reduced to what routing needs."""

    name: str
    sources: frozenset[str] | None
    """None means every source."""
    events: frozenset[str] | None
    """Change types and event type names (an append source's ``event_type``); None: every
    event."""
    on_fields: tuple[str, ...] = ()
    """JSON Pointers; an update passes when one of them changed. Empty: every update."""
    match: EventMatch | None = None

    def accepts(self, source: str, change: Change, envelope: dict[str, Any] | None = None) -> bool:
        """Whether this listener gets ``change``; ``envelope`` is needed only with ``match``."""
        if self.sources is not None and source not in self.sources:
            return False
        if self.events is not None and (change.name or change.type) not in self.events:
            return False
        if (
            self.on_fields
            and change.type == "updated"
            and not any(touches(p, change.changes) for p in self.on_fields)
        ):
            return False
        return self.match is None or (envelope is not None and self.match.matches(envelope))


def route_change(
    source: str,
    change: Change,
    routes: Sequence[ListenerRoute],
    detected_at: datetime | None = None,
) -> list[str]:
    """Names of the listeners that get ``change``, in configuration order.

    ``match`` expressions see the change's event envelope without the ``id`` (given at commit);
    its ``timestamp`` is ``detected_at``, left out when that is None.
    """
    envelope: dict[str, Any] | None = None
    names = []
    for route in routes:
        if route.match is not None and envelope is None:
            envelope = change_envelope(source, change, detected_at)
        if route.accepts(source, change, envelope):
            names.append(route.name)
    return names
