"""bridge/console/views.py: the console's view models, from store records to page rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge import state_view
from bridge.console import views
from bridge.models import Event, ListenerState, SourceState
from bridge.store import AttemptInfo, DeliveryInfo, TrackedCounts

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _runtime(**over):
    doc = {
        "pid": 42,
        "version": "1.0",
        "started_at": (NOW - timedelta(hours=1)).isoformat(),
        "heartbeat_at": NOW.isoformat(),
        "stopped_at": None,
        "config_files": ["/etc/pollbridge.toml"],
        "http": "http://127.0.0.1:9464",
        "sources": {
            "orders": {
                "schedule": "every 30s",
                "interval_s": 30.0,
                "next_poll_at": (NOW - timedelta(seconds=45)).isoformat(),
            },
            "catalog": {"schedule": "every 1m", "interval_s": 60.0, "next_poll_at": None},
        },
        "listeners": {"crm": {"in_flight": 2, "paused": False, "state": "breaker_open"}},
        "last_reload": None,
    }
    doc.update(over)
    return doc


def test_status_doc_states_and_the_next_poll():
    """Each source's state (held, backoff, failing, never polled, ok); a recorded next poll in
    the past moves forward on its grid; a listener paused in the state says so."""
    sources = [
        SourceState("orders", last_poll_at=NOW, item_count=3, last_result="ok"),
        SourceState("catalog", held_reason="would delete 9 of 10 items", held_polls=1),
        SourceState("flaky", consecutive_failures=2, last_error="HTTP 500", last_poll_at=NOW),
        SourceState("late", not_before=NOW + timedelta(minutes=5), last_poll_at=NOW),
    ]
    listeners = [ListenerState("crm", pending=4, dead=1), ListenerState("gone", paused=True)]
    doc = state_view.status_doc("/var/lib/state.db", _runtime(), sources, listeners, NOW)
    states = {s["name"]: s["state"] for s in doc["sources"]}
    assert states == {"catalog": "held", "flaky": "failing", "late": "backoff", "orders": "ok"}
    orders = next(s for s in doc["sources"] if s["name"] == "orders")
    assert orders["next_poll_at"] == (NOW + timedelta(seconds=15)).isoformat()
    assert orders["configured"] is True and orders["schedule"] == "every 30s"
    flaky = next(s for s in doc["sources"] if s["name"] == "flaky")
    assert flaky["configured"] is False
    by_name = {lst["name"]: lst for lst in doc["listeners"]}
    assert by_name["crm"]["state"] == "breaker_open" and by_name["crm"]["in_flight"] == 2
    assert by_name["gone"]["state"] == "paused"
    assert doc["daemon"]["running"] is True and doc["state"] == "/var/lib/state.db"


def test_a_stopped_daemon_reports_no_live_numbers():
    """Without a fresh heartbeat: not running, no next poll, nothing in flight."""
    runtime = _runtime(heartbeat_at=(NOW - timedelta(minutes=5)).isoformat())
    doc = state_view.status_doc("s", runtime, [SourceState("orders")], [], NOW)
    assert doc["daemon"]["running"] is False and doc["daemon"]["responding"] is False
    assert doc["sources"][0]["next_poll_at"] is None
    assert doc["sources"][0]["state"] == "never polled"
    assert doc["listeners"][0]["in_flight"] == 0
    assert state_view.status_doc("s", None, [], [], NOW)["daemon"] is None


def test_rows_say_why_and_pick_a_colour():
    """A held source says how many deletions and polls, a failing one its error; a paused
    listener its reason; an active listener with dead deliveries is a warning."""
    doc = state_view.status_doc(
        "s",
        _runtime(),
        [
            SourceState("catalog", held_reason="would delete 9 of 10 items", held_polls=2),
            SourceState("flaky", consecutive_failures=3, last_error="HTTP 500", last_poll_at=NOW),
        ],
        [ListenerState("crm", dead=2), ListenerState("gone", paused=True, paused_reason="410")],
        NOW,
    )
    rows = {s["name"]: views.source_row(s, None, NOW) for s in doc["sources"]}
    assert rows["catalog"].state_text == "held: would delete 9 of 10 items (2 poll(s))"
    assert rows["catalog"].level == "warn"
    assert rows["flaky"].state_text.startswith("failing (3x): HTTP 500")
    assert rows["flaky"].level == "bad" and rows["flaky"].times["last_poll_at"] == "just now"
    lrows = {lst["name"]: views.listener_row(lst, None, NOW) for lst in doc["listeners"]}
    assert lrows["gone"].state_text == "paused: 410 (not configured)"
    assert lrows["gone"].level == "bad"
    assert lrows["crm"].level == "warn"  # breaker_open


def test_source_rows_note_seen_keys_waiting_deletions_and_the_cursor():
    """What an append, confirm_deletes or incremental source keeps shows under its items."""
    doc = state_view.status_doc(
        "s",
        _runtime(),
        [
            SourceState("feed", item_count=0),
            SourceState("search", item_count=40),
            SourceState("tickets", item_count=9, cursor="2024-06-01T00:00:00Z"),
            SourceState("plain", item_count=3),
        ],
        [],
        NOW,
        {"feed": TrackedCounts(seen_keys=120), "search": TrackedCounts(pending_deletes=2)},
    )
    rows = {s["name"]: views.source_row(s, None, NOW) for s in doc["sources"]}
    assert rows["feed"].notes == ("120 seen key(s) remembered",)
    assert rows["search"].notes == ("2 deletion(s) waiting for confirm_deletes",)
    assert rows["tickets"].notes == ("cursor 2024-06-01T00:00:00Z",)
    assert rows["plain"].notes == ()


@pytest.mark.parametrize(
    ("delta_s", "text"),
    [
        (0.2, "just now"),
        (12, "12 s ago"),
        (185, "3 min ago"),
        (7200, "2 h ago"),
        (7500, "2 h 5 min ago"),
        (3 * 86400, "3 d ago"),
        (-30, "in 30 s"),
    ],
)
def test_relative_times(delta_s, text):
    """Human ages as the pages show them."""
    assert views.relative(NOW - timedelta(seconds=delta_s), NOW) == text
    assert views.relative(None, NOW) == "-"


def _event(kind, before, after, changes):
    return Event("evt_1", 1, "orders", "42", kind, NOW, before, after, changes)


def test_field_rows_mark_what_the_patch_touched():
    """Before and after side by side, one row per leaf; rows under a changed path are
    marked, the others not; a field only on one side shows '-' on the other."""
    event = _event(
        "updated",
        {"id": 42, "status": "open", "address": {"city": "Oslo", "zip": "0150"}, "tags": ["a"]},
        {"id": 42, "status": "paid", "address": {"city": "Bergen", "zip": "0150"}, "note": "x"},
        [
            {"op": "replace", "path": "/status", "value": "paid"},
            {"op": "replace", "path": "/address/city", "value": "Bergen"},
            {"op": "remove", "path": "/tags"},
            {"op": "add", "path": "/note", "value": "x"},
        ],
    )
    rows = {r.path: r for r in views.field_rows(event)}
    assert rows["/status"].before == "open" and rows["/status"].after == "paid"
    assert rows["/status"].changed and rows["/address/city"].changed
    assert not rows["/id"].changed and not rows["/address/zip"].changed
    assert rows["/tags/0"].changed and rows["/tags/0"].after is None
    assert rows["/note"].before is None and rows["/note"].changed
    assert rows["/id"].before == "42"  # JSON text for non-strings


def test_field_rows_of_created_and_deleted_items_are_all_changed():
    """A created item has no before, a deleted one no after: every row is marked."""
    created = views.field_rows(_event("created", None, {"id": 1, "a/b": True}, []))
    assert [(r.path, r.before, r.after, r.changed) for r in created] == [
        ("/id", None, "1", True),
        ("/a~1b", None, "true", True),
    ]
    deleted = views.field_rows(_event("deleted", {"id": 1}, None, []))
    assert [(r.before, r.after, r.changed) for r in deleted] == [("1", None, True)]
    scalar = views.field_rows(_event("updated", 1, 2, []))
    assert [(r.path, r.changed) for r in scalar] == [("/", True)]


def test_pages_slice_newest_first_and_say_if_there_is_more():
    """A page shows its rows newest first; the store is asked for one more than it needs."""
    newest_last = list(range(1, 451))
    first = views.Page(1)
    assert first.fetch_limit == 201
    rows, more = first.slice(newest_last[-201:])
    assert rows[0] == 450 and rows[-1] == 251 and len(rows) == 200 and more
    third = views.Page(3)
    rows, more = third.slice(newest_last)
    assert rows == list(range(50, 0, -1)) and not more
    assert views.page_number("7") == 7 and views.page_number("0") == 1
    assert views.page_number("x") == 1 and views.page_number("999") == views.MAX_PAGES


def _delivery(state="dead", **over):
    fields = {
        "id": 7,
        "event_id": "evt_1",
        "listener": "crm",
        "source": "orders",
        "key_text": "42",
        "type": "updated",
        "state": state,
        "attempts": 2,
        "next_at": None,
        "created_at": NOW,
        "updated_at": NOW,
        "delivered_at": None,
        "last_status": 500,
        "last_error": "HTTP 500",
        "last_response": "oops",
    }
    fields.update(over)
    return DeliveryInfo(**fields)


def test_show_doc_has_the_cli_shape():
    """show --json: the envelope plus each delivery with its attempt_history."""
    attempt = AttemptInfo(NOW, 500, 12.5, "HTTP 500", "oops")
    event = _event("updated", {"a": 1}, {"a": 2}, [{"op": "replace", "path": "/a", "value": 2}])
    doc = views.show_doc(event, [_delivery()], {7: [attempt]})
    assert doc["id"] == "evt_1" and doc["type"] == "item.updated"
    assert doc["data"]["changes"] == [{"op": "replace", "path": "/a", "value": 2}]
    (delivery,) = doc["deliveries"]
    assert delivery["attempts"] == 2 and delivery["attempt_history"][0]["status"] == 500
    assert views.attempt_rows([attempt])[0] == {
        "at": "2026-11-23 12:00:00Z",
        "status": "500",
        "took": "12 ms",
        "error": "HTTP 500",
        "response": "oops",
        "ok": False,
    }
    assert views.delivery_samples([_delivery(), _delivery("delivered")]) == [
        (NOW, "bad"),
        (NOW, "ok"),
    ]


def test_redact_tree_reaches_every_string():
    """Keys, values and list items: every string is redacted; other values are kept."""
    tree = {"a secret": ["secret!", 1, None, {"k": ("x secret",)}]}
    redacted = views.redact_tree(tree, lambda s: s.replace("secret", "***"))
    assert redacted == {"a ***": ["***!", 1, None, {"k": ["x ***"]}]}
    assert views.to_json({"at": NOW}).decode() == '{\n  "at": "2026-11-23T12:00:00+00:00"\n}\n'
