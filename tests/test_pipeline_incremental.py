"""Incremental sources in one process: windows since the cursor, the cursor from the data."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.configs import source
from tests.support.incremental_api import ChangedSinceAPI
from tests.support.pipelines import baselined, make_config, running
from tests.support.servers import Reply, serve


def _source(url: str, *, per_page: int = 10, paginate: bool = True, **incremental: str) -> str:
    """The ``tickets`` source; ``incremental`` overrides and adds keys of its incremental table."""
    return source(
        "tickets",
        url,
        every="1m",
        mode="incremental",
        items="$.tickets[*]",
        params={"per_page": per_page},
        paginate={"kind": "next_url", "next": "$.next_page"} if paginate else None,
        incremental={
            "cursor": "$.updated_at",
            "param": "updated_since",
            "lookback": "0s",
            **incremental,
        },
    )


@pytest.fixture
def api():
    handler = ChangedSinceAPI(count=25)
    with serve(handler) as server:
        yield handler, server


async def test_first_poll_baselines_then_windows_carry_only_changes(tmp_path: Path, api):
    """start = "now": the complete list is the silent baseline; later polls ask since the
    greatest updated_at seen and emit only what changed."""
    handler, server = api
    config = make_config(tmp_path, _source(server.url("/tickets")))
    async with running(config) as h:
        first = await h.poll()
        assert first.result == "baseline" and first.item_count == 25
        assert handler.asked == [None]
        state = await h.store.get_source_state("tickets")
        assert state is not None and state.cursor == "2026-03-01T09:00:25.000000+00:00"
        handler.change(3, status="solved")
        handler.change(30, subject="new", status="open")
        second = await h.poll()
        assert handler.asked[-1] == "2026-03-01T09:00:25Z"
        assert sorted((c.type, c.key_text) for c in second.changes) == [
            ("created", "30"),
            ("updated", "3"),
        ]
        assert second.item_count == 26
        third = await h.poll()
        assert third.result == "unchanged" and third.changes == []
        assert await h.events() == [
            {"type": "updated", "key_text": "3"},
            {"type": "created", "key_text": "30"},
        ]


async def test_the_clock_of_the_bridge_host_never_moves_the_cursor(tmp_path: Path, api):
    """A jump of the bridge's clock, forward or back, changes nothing that is asked for."""
    handler, server = api
    config = make_config(tmp_path, _source(server.url("/tickets"), lookback="2m"))
    async with baselined(config) as h:
        h.clock.advance(10 * 365 * 86400)
        await h.poll()
        h.clock.now -= timedelta(days=20 * 365)
        handler.change(7, status="pending")
        outcome = await h.poll()
        assert [(c.type, c.key_text) for c in outcome.changes] == [("updated", "7")]
        # the cursor came from the data both times: 09:00:25 minus the 2m lookback
        assert handler.asked == [None, "2026-03-01T08:58:25Z", "2026-03-01T08:58:25Z"]
        state = await h.store.get_source_state("tickets")
        assert state is not None and state.cursor == "2026-03-01T09:00:26.000000+00:00"


async def test_result_order_does_not_matter(tmp_path: Path, api):
    """A newest-first API gives the same events and the same cursor."""
    handler, server = api
    handler.descending = True
    config = make_config(tmp_path, _source(server.url("/tickets")))
    async with baselined(config) as h:
        for i in (4, 14, 24):
            handler.change(i, status="solved")
        outcome = await h.poll()
        assert sorted(c.key_text for c in outcome.changes) == ["14", "24", "4"]
        state = await h.store.get_source_state("tickets")
        assert state is not None and state.cursor == "2026-03-01T09:00:28.000000+00:00"


async def test_a_failed_page_fails_the_poll_and_keeps_the_cursor(tmp_path: Path):
    """Page 2 of a window answers 500: no event, the cursor stays, the next poll re-asks."""
    handler = ChangedSinceAPI(count=25)
    broken = {"on": False}

    def api(req):  # type: ignore[no-untyped-def]
        if broken["on"] and req.query.get("page") == ["2"]:
            return Reply(500, {"error": "boom"})
        return handler(req)

    with serve(api) as server:
        config = make_config(tmp_path, _source(server.url("/tickets")))
        async with baselined(config) as h:
            for i in range(1, 13):  # 12 changes: two pages
                handler.change(i, status="solved")
            broken["on"] = True
            failed = await h.poll()
            assert not failed.ok and "500" in (failed.error or "")
            state = await h.store.get_source_state("tickets")
            assert state is not None and state.cursor == "2026-03-01T09:00:25.000000+00:00"
            assert await h.events() == []
            broken["on"] = False
            h.clock.advance(3600)  # past the backoff
            again = await h.poll()
            assert len(again.changes) == 12
            assert handler.asked[-1] == handler.asked[-2] == "2026-03-01T09:00:25Z"


async def test_an_item_without_a_readable_cursor_fails_the_poll_naming_its_key(tmp_path: Path, api):
    """A missing or unparsable cursor value is a poll error that names the item's key."""
    handler, server = api
    config = make_config(tmp_path, _source(server.url("/tickets")))
    async with baselined(config) as h:
        handler.change(5, status="x")
        with handler.lock:
            handler.tickets[5]["updated_at"] = "yesterday"
        bad = await h.poll()
        assert not bad.ok
        assert "item '5'" in (bad.error or "") and "'yesterday'" in (bad.error or "")
        with handler.lock:
            del handler.tickets[5]["updated_at"]
        h.clock.advance(3600)
        missing = await h.poll()
        assert "item '5' has no value at incremental.cursor $.updated_at" in (missing.error or "")
        state = await h.store.get_source_state("tickets")
        assert state is not None and state.cursor == "2026-03-01T09:00:25.000000+00:00"


async def test_deleted_when_turns_a_soft_delete_into_a_delete(tmp_path: Path, api):
    """An item deleted_when selects is deleted if known, ignored if never seen."""
    handler, server = api
    text = _source(server.url("/tickets"), deleted_when="$[?(@.status == 'deleted')]")
    config = make_config(tmp_path, text)
    async with baselined(config) as h:
        handler.change(2, status="deleted")
        handler.change(99, status="deleted")
        outcome = await h.poll()
        assert [(c.type, c.key_text) for c in outcome.changes] == [("deleted", "2")]
        assert outcome.item_count == 24
        assert "2" not in (await h.store.load_hashes("tickets")).hashes
        again = await h.poll()  # re-seen in the window: still gone, no second event
        assert again.changes == []


async def test_only_a_reconcile_poll_finds_hard_deletes(tmp_path: Path, api):
    """A window never deletes what it does not return; the reconcile poll (the complete
    list) does, keeps the cursor, and is next due reconcile_every later."""
    handler, server = api
    config = make_config(tmp_path, _source(server.url("/tickets"), reconcile_every="1h"))
    async with baselined(config) as h:
        handler.remove(9)
        window = await h.poll()
        assert window.changes == [] and window.asked is not None and "window" in window.asked
        h.clock.advance(3601)
        reconcile = await h.poll()
        assert reconcile.asked == "complete list (reconcile)"
        assert [(c.type, c.key_text) for c in reconcile.changes] == [("deleted", "9")]
        assert handler.asked[-1] is None
        state = await h.store.get_source_state("tickets")
        assert state is not None and state.cursor == "2026-03-01T09:00:25.000000+00:00"
        assert state.reconciled_at == h.clock.now
        after = await h.poll()
        assert after.asked is not None and after.asked.startswith("window since")


async def test_a_reconcile_obeys_the_mass_delete_guard(tmp_path: Path, api):
    """A reconcile that would delete most items is held like any complete list."""
    handler, server = api
    config = make_config(tmp_path, _source(server.url("/tickets"), reconcile_every="1h"))
    async with baselined(config) as h:
        for i in range(1, 21):
            handler.remove(i)
        h.clock.advance(3601)
        held = await h.poll()
        assert held.result == "held" and held.changes == []
        assert len((await h.store.load_hashes("tickets")).hashes) == 25


async def test_start_at_a_time_backfills_from_it(tmp_path: Path, api):
    """start = an RFC 3339 time: the first poll asks since then and emits what it gets."""
    handler, server = api
    text = _source(server.url("/tickets"), start="2026-03-01T09:00:21Z")
    config = make_config(tmp_path, text)
    async with running(config) as h:
        first = await h.poll()
        assert handler.asked == ["2026-03-01T09:00:21Z"]
        assert [c.key_text for c in first.changes] == ["21", "22", "23", "24", "25"]
        assert {c.type for c in first.changes} == {"created"}


async def test_an_empty_first_list_asks_for_everything_until_an_item_appears(tmp_path: Path):
    """start = "now" on an empty API: no cursor yet, so the next poll has no lower bound and
    a new item is an event, then its updated_at becomes the cursor."""
    handler = ChangedSinceAPI(count=0)
    with serve(handler) as server:
        config = make_config(tmp_path, _source(server.url("/tickets")))
        async with running(config) as h:
            first = await h.poll()
            assert first.result == "baseline" and first.cursor is None
            handler.change(1, subject="first", status="open")
            second = await h.poll()
            assert [(c.type, c.key_text) for c in second.changes] == [("created", "1")]
            assert second.cursor == "2026-03-01T09:00:01.000000+00:00"
            await h.poll()
            assert handler.asked == [None, None, "2026-03-01T09:00:01Z"]


async def test_changing_the_cursor_rebaselines_and_changing_lookback_does_not(tmp_path: Path, api):
    """The cursor path is part of what defines the source; the lookback is not."""
    handler, server = api
    url = server.url("/tickets")
    async with baselined(make_config(tmp_path, _source(url))) as h:
        h.reconfigure(make_config(tmp_path, _source(url, lookback="5m")))
        same = await h.poll()
        assert same.result == "unchanged"
        h.reconfigure(make_config(tmp_path, _source(url, cursor='$["updated_at"]')))
        rebased = await h.poll()
        assert rebased.result == "rebaseline" and rebased.changes == []
        assert handler.asked[-1] is None  # start = "now": a complete list


async def test_a_dry_run_shows_the_cursor_it_would_send_and_store(tmp_path: Path, api):
    """poll --dry-run: the window's bound and the cursor that would be stored; nothing moves."""
    handler, server = api
    config = make_config(tmp_path, _source(server.url("/tickets"), lookback="1m"))
    async with baselined(config) as h:
        handler.change(1, status="solved")
        dry = await h.poll(commit=False)
        assert dry.cursor_sent == "2026-03-01T08:59:25Z"
        assert dry.cursor == "2026-03-01T09:00:26.000000+00:00"
        assert [c.key_text for c in dry.changes] == ["1"]
        state = await h.store.get_source_state("tickets")
        assert state is not None and state.cursor == "2026-03-01T09:00:25.000000+00:00"


async def test_a_full_window_without_pagination_is_reported(tmp_path: Path, api):
    """A single-page window that returns exactly the per_page it asked for warns: the API
    probably caps it and changes beyond the cap are lost."""
    handler, server = api
    config = make_config(tmp_path, _source(server.url("/tickets"), per_page=5, paginate=False))
    async with running(config) as h:
        await h.poll()  # the baseline: a complete list, not a window
        for i in range(1, 8):
            handler.change(i, status="solved")
        outcome = await h.poll()
        assert len(outcome.changes) == 5
        assert outcome.warnings and "per_page = 5 cap" in outcome.warnings[0]


async def test_the_cursor_can_go_in_a_json_body(tmp_path: Path):
    """body = "variables.since": a POST body carries the bound (a Unix time as a number)."""
    seen: list[object] = []

    def api(req):  # type: ignore[no-untyped-def]
        body = req.json()
        seen.append(body)
        since = body["variables"].get("since")
        rows = [{"id": 1, "ts": 100}, {"id": 2, "ts": 200}]
        return Reply(200, {"data": [r for r in rows if since is None or r["ts"] >= since]})

    with serve(api) as server:
        tickets = source(
            "tickets",
            server.url("/graphql"),
            every="1m",
            method="POST",
            body={"query": "q", "variables": {"first": 50}},
            mode="incremental",
            incremental={
                "cursor": "$.ts",
                "body": "variables.since",
                "format": "unix",
                "start": "1970-01-01T00:02:30Z",
            },
        )
        async with running(make_config(tmp_path, tickets)) as h:
            first = await h.poll()
            assert [c.key_text for c in first.changes] == ["2"]
            await h.poll()
    assert seen == [
        {"query": "q", "variables": {"first": 50, "since": 150}},
        {"query": "q", "variables": {"first": 50, "since": 200}},
    ]


async def test_a_reconcile_after_a_backfill_adds_older_items_silently(tmp_path: Path, api):
    """start = a time, then a reconcile: items last changed before start join the snapshot
    without events (they were never asked for); a missed item changed since start is created."""
    handler, server = api
    text = _source(server.url("/tickets"), start="2026-03-01T09:00:21Z", reconcile_every="1h")
    config = make_config(tmp_path, text)
    async with running(config) as h:
        await h.poll()  # the backfill: tickets 21-25
        handler.change(30, subject="missed", status="open")
        with handler.lock:  # a window would have found it: make it a ticket the windows missed
            handler.tickets[30]["updated_at"] = "2026-03-01T09:00:22Z"
        reconcile = await h.poll()
        assert reconcile.asked == "complete list (reconcile)"
        assert [(c.type, c.key_text) for c in reconcile.changes] == [("created", "30")]
        assert len((await h.store.load_hashes("tickets")).hashes) == 26


async def test_a_graphql_source_carries_the_cursor_in_its_variables(tmp_path: Path):
    """[sources.graphql] with body = "variables.since": the bound joins the query's variables."""
    seen: list[object] = []

    def api(req):  # type: ignore[no-untyped-def]
        body = req.json()
        seen.append(body["variables"])
        rows = [
            {"id": "a", "at": "2026-03-01T09:00:00Z"},
            {"id": "b", "at": "2026-03-01T10:00:00Z"},
        ]
        since = body["variables"].get("since")
        return Reply(
            200, {"data": {"issues": [r for r in rows if since is None or r["at"] >= since]}}
        )

    with serve(api) as server:
        issues = source(
            "issues",
            server.url("/graphql"),
            every="1m",
            mode="incremental",
            items="$.data.issues[*]",
            graphql={
                "query": "query($since: String) { issues(since: $since) { id at } }",
                "variables": {"team": "core"},
            },
            incremental={"cursor": "$.at", "body": "variables.since"},
        )
        async with running(make_config(tmp_path, issues)) as h:
            first = await h.poll()
            assert first.result == "baseline", first.error
            await h.poll()
    assert seen == [{"team": "core"}, {"team": "core", "since": "2026-03-01T10:00:00Z"}]
