"""Listener filters: on_fields (JSON Pointers) and match (JSONPath), ANDed with sources and events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.hashing import canonical_json
from bridge.core.patch import make_patch
from bridge.core.routing import ListenerRoute, check_pointer, compile_match, route_change, touches
from bridge.models import Change

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# the machine is shared: slow draws are load, not a bug
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _change(kind, before, after, key="1"):
    return Change(kind, key, key, before, after, make_patch(before, after), None)


@pytest.mark.parametrize("pointer", ["/status", "/shipping/carrier", "/a~1b", "/a~0b", "/0", "/"])
def test_valid_pointers_are_accepted(pointer):
    """RFC 6901 pointers, escapes included, are valid on_fields entries."""
    assert check_pointer(pointer) == pointer


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        ("status", "must start with '/'"),
        ("$.status", "a JSONPath"),
        ("", "must start with '/'"),
        ("/a~2b", "'~' must be followed by 0"),
        ("/a~", "'~' must be followed by 0"),
    ],
)
def test_invalid_pointers_say_why(pointer, message):
    """A bad on_fields entry is rejected with the reason."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("$", r"\$")):
        check_pointer(pointer)


@pytest.mark.parametrize(
    ("pointer", "paths", "expected"),
    [
        ("/status", ["/status"], True),
        ("/status", ["/statusCode"], False),  # a prefix of the name is not the field
        ("/shipping", ["/shipping/carrier"], True),  # below the pointer
        ("/shipping/carrier", ["/shipping"], True),  # the parent was replaced
        ("/shipping/carrier", [""], True),  # the whole item was replaced
        ("/shipping/carrier", ["/shipping/eta"], False),  # a sibling
        ("/a~1b", ["/a~1b/c"], True),
        ("/status", [], False),
    ],
)
def test_touches_matches_patch_paths_on_token_boundaries(pointer, paths, expected):
    """A pointer is touched by an op at, below or above it, never by a sibling or a longer name."""
    patch = [{"op": "replace", "path": p, "value": 1} for p in paths]
    assert touches(pointer, patch) is expected


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
_items = st.dictionaries(st.sampled_from(["a", "b", "c", "d/e"]), _json, max_size=4)


@RELAXED
@given(_items, _items, st.sampled_from(["a", "b", "c", "d/e"]))
def test_touches_a_top_level_field_iff_it_changed(before, after, name):
    """on_fields law: a field is touched by the patch exactly when its value differs."""
    pointer = "/" + name.replace("~", "~0").replace("/", "~1")
    missing = object()
    old, new = before.get(name, missing), after.get(name, missing)
    changed = (old is missing) != (new is missing) or (
        old is not missing and canonical_json(old) != canonical_json(new)
    )
    assert touches(pointer, make_patch(before, after)) is changed


ENVELOPE = {
    "type": "item.updated",
    "source": "orders",
    "key": "7",
    "data": {
        "before": {"total": 90, "status": "open"},
        "after": {"total": 150, "status": "paid", "lines": [{"sku": "A", "qty": 1}]},
        "changes": [],
    },
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("$.data.after[?(@.total > 100)]", True),  # a filter on an object tests the object
        ("$.data.after[?(@.total > 200)]", False),
        ("$.data.before[?(@.total > 100)]", False),
        ('$[?(@.type == "item.updated")]', True),
        ('$[?(@.type == "item.deleted")]', False),
        ('$[?(@.source == "orders" && @.data.after.total >= 150)]', True),
        ('$.data.after.lines[?(@.sku == "A")]', True),  # on an array: its elements
        ('$.data.after.lines[?(@.sku == "B")]', False),
        ("$.data.after.status", True),  # selects something
        ("$.data.after.missing", False),
        ('$.data.after[?(@.status =~ "^pa")]', True),
    ],
)
def test_match_passes_events_it_selects_something_in(expression, expected):
    """match: the event passes when the expression selects anything in its envelope."""
    assert compile_match(expression).matches(ENVELOPE) is expected


@pytest.mark.parametrize("expression", ["status", "$[?(@.a >)]", "$..["])
def test_invalid_match_is_rejected(expression):
    """A match that is not JSONPath fails at load, naming the expression."""
    with pytest.raises(ValueError, match="invalid JSONPath"):
        compile_match(expression)


def test_route_change_ands_every_filter_in_config_order():
    """sources, events, on_fields and match all have to pass; created/deleted skip on_fields."""
    routes = [
        ListenerRoute("all", None, frozenset({"created", "updated", "deleted"})),
        ListenerRoute("other-source", frozenset({"users"}), frozenset({"updated"})),
        ListenerRoute("deletes", None, frozenset({"deleted"})),
        ListenerRoute("status", None, frozenset({"created", "updated", "deleted"}), ("/status",)),
        ListenerRoute(
            "big",
            None,
            frozenset({"created", "updated", "deleted"}),
            match=compile_match("$.data.after[?(@.total > 100)]"),
        ),
        ListenerRoute(
            "big-status",
            frozenset({"orders"}),
            frozenset({"updated"}),
            ("/status",),
            compile_match("$.data.after[?(@.total > 100)]"),
        ),
    ]
    note = _change(
        "updated",
        {"status": "a", "total": 500, "note": ""},
        {"status": "a", "total": 500, "note": "x"},
    )
    status = _change("updated", {"status": "a", "total": 500}, {"status": "b", "total": 500})
    small = _change("updated", {"status": "a", "total": 5}, {"status": "b", "total": 5})
    created = _change("created", None, {"status": "a", "total": 5})
    deleted = _change("deleted", {"status": "a", "total": 500}, None)
    assert route_change("orders", note, routes, AT) == ["all", "big"]
    assert route_change("orders", status, routes, AT) == ["all", "status", "big", "big-status"]
    assert route_change("orders", small, routes, AT) == ["all", "status"]
    assert route_change("orders", created, routes, AT) == ["all", "status"]
    assert route_change("orders", deleted, routes, AT) == ["all", "deletes", "status"]
    assert route_change("users", status, routes, AT) == [
        "all",
        "other-source",
        "status",
        "big",
    ]


def test_match_sees_the_timestamp_and_source_of_the_change():
    """The routing envelope carries source, key and detection time like the delivered one."""
    route = ListenerRoute(
        "late",
        None,
        frozenset({"created"}),
        match=compile_match('$[?(@.timestamp == "2026-11-23T12:00:00.000Z" && @.key == "9")]'),
    )
    assert route_change("orders", _change("created", None, {"a": 1}, key="9"), [route], AT) == [
        "late"
    ]
    assert route_change("orders", _change("created", None, {"a": 1}, key="8"), [route], AT) == []
