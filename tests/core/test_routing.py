"""Routing: which listeners get a change."""

from __future__ import annotations

import pytest

from bridge.core.routing import ListenerRoute, route_change
from bridge.models import Change, ChangeType

ALL_EVENTS: frozenset[ChangeType] = frozenset({"created", "updated", "deleted"})
ROUTES = [
    ListenerRoute("everything", None, ALL_EVENTS),
    ListenerRoute("orders-only", frozenset({"orders"}), ALL_EVENTS),
    ListenerRoute("deletions", None, frozenset({"deleted"})),
    ListenerRoute("users-created", frozenset({"users"}), frozenset({"created"})),
    ListenerRoute("nothing-known", frozenset(), ALL_EVENTS),
]


def change(type_: ChangeType) -> Change:
    return Change(type_, "1", "1", None, {"id": 1}, [], None)


@pytest.mark.parametrize(
    ("source", "type_", "expected"),
    [
        ("orders", "created", ["everything", "orders-only"]),
        ("orders", "deleted", ["everything", "orders-only", "deletions"]),
        ("users", "created", ["everything", "users-created"]),
        ("users", "updated", ["everything"]),
        ("users", "deleted", ["everything", "deletions"]),
        ("other", "updated", ["everything"]),
    ],
)
def test_route_change_filters_by_source_and_event(
    source: str, type_: ChangeType, expected: list[str]
) -> None:
    """A listener gets a change when it accepts the source (None = all) and the event type."""
    assert route_change(source, change(type_), ROUTES) == expected


def test_routes_keep_configuration_order() -> None:
    """Matching listeners are returned in the order they were configured."""
    reversed_routes = list(reversed(ROUTES))
    assert route_change("orders", change("deleted"), reversed_routes) == [
        "deletions",
        "orders-only",
        "everything",
    ]


def test_no_routes_means_no_listeners() -> None:
    """Without listeners a change goes nowhere."""
    assert route_change("orders", change("created"), []) == []
