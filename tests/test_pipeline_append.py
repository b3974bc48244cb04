"""Event-log sources (mode = "append") polled in process against a local newest-first log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Config
from bridge.core.payload import cloudevent, event_envelope
from bridge.store import EventQuery
from tests.support.configs import listener, source
from tests.support.event_logs import EventLogAPI
from tests.support.pipelines import baselined, make_config, running
from tests.support.servers import Reply, TestServer, serve


@pytest.fixture
def log_api() -> Iterator[tuple[EventLogAPI, TestServer]]:
    """A newest-first log of 25 entries, pages of 10, on 127.0.0.1."""
    fake = EventLogAPI(25, page_size=10)
    with serve(fake) as server:
        yield fake, server


def _config(tmp_path: Path, server: TestServer, **fields: Any) -> Config:
    """The ``feed`` log (``fields``: further keys of the source, None drops one) and a listener."""
    feed = source(
        "feed",
        server.url("/events"),
        **{
            "every": "10s",
            "items": None,
            "mode": "append",
            "paginate": {"kind": "link"},
            **fields,
        },
    )
    return make_config(tmp_path, feed, listener("hook", "http://127.0.0.1:9/hook"))


def _event_requests(server: TestServer) -> int:
    return sum(1 for r in server.requests if r.path == "/events")


async def test_silent_baseline_reads_one_page_and_a_quiet_log_costs_one_request(
    tmp_path: Path, log_api: tuple[EventLogAPI, TestServer]
) -> None:
    """The first poll remembers page 1 without events; a quiet poll asks for page 1 only."""
    _fake, server = log_api
    config = _config(tmp_path, server)
    async with running(config) as h:
        first = await h.poll()
        assert (first.result, first.changes, first.pages) == ("baseline", [], 1)
        assert first.remembered == 10
        for _ in range(3):
            before = _event_requests(server)
            quiet = await h.poll()
            assert quiet.result == "unchanged"
            assert _event_requests(server) - before == 1
        assert await h.events() == []


async def test_new_entries_become_one_event_each_across_pages(
    tmp_path: Path, log_api: tuple[EventLogAPI, TestServer]
) -> None:
    """A burst larger than a page is walked until a page holds a seen key; each entry once."""
    fake, server = log_api
    config = _config(tmp_path, server)
    async with baselined(config) as h:
        new_ids = fake.emit(13)
        before = _event_requests(server)
        outcome = await h.poll()
        assert outcome.result == "ok"
        # page 1 and 2 hold only new entries until entry 26..38; page 2 holds 26..28 and 25
        assert _event_requests(server) - before == 2
        assert outcome.stopped
        assert sorted(int(c.key) for c in outcome.changes) == sorted(int(i) for i in new_ids)
        assert {c.type for c in outcome.changes} == {"created"}
        before = _event_requests(server)
        again = await h.poll()
        assert again.result == "unchanged" and again.changes == []
        # the stored walk reached page 2, but page 1 answering 304 ends it: one request
        assert _event_requests(server) - before == 1
        rows = await h.events()
        assert len(rows) == 13 and {r["type"] for r in rows} == {"created"}


async def test_emit_baseline_sends_every_entry_and_event_type_names_them(
    tmp_path: Path, log_api: tuple[EventLogAPI, TestServer]
) -> None:
    """baseline = "emit" walks the whole log; event_type names the events in the payload."""
    _fake, server = log_api
    config = _config(tmp_path, server, baseline="emit", event_type="github.event")
    async with running(config) as h:
        outcome = await h.poll()
        assert outcome.result == "baseline" and outcome.pages == 3
        assert len(outcome.changes) == 25
        assert {c.name for c in outcome.changes} == {"github.event"}
        assert outcome.events and outcome.events[0].name == "github.event"
        assert event_envelope(outcome.events[0])["type"] == "github.event"
        assert cloudevent(outcome.events[0])["type"] == "pollbridge.github.event"
        listed = await h.store.list_events(EventQuery(limit=5))
        assert {r.event.name for r in listed} == {"github.event"}


async def test_stop_at_seen_false_walks_every_page(
    tmp_path: Path, log_api: tuple[EventLogAPI, TestServer]
) -> None:
    """stop_at_seen = false reads the whole log each poll (a log that is oldest-first)."""
    fake, server = log_api
    config = _config(tmp_path, server, stop_at_seen=False)
    async with running(config) as h:
        first = await h.poll()
        assert first.pages == 3 and first.remembered == 25
        fake.emit(1)
        outcome = await h.poll()
        assert outcome.pages == 3 and len(outcome.changes) == 1 and not outcome.stopped


async def test_seen_keys_stay_bounded_on_an_endless_log(
    tmp_path: Path, log_api: tuple[EventLogAPI, TestServer]
) -> None:
    """Many polls of a log that never stops: at most remember_count keys are remembered,
    and no entry is announced twice."""
    fake, server = log_api
    config = _config(tmp_path, server, remember_count=30)
    async with baselined(config) as h:
        announced: list[str] = []
        for n in range(60):
            fake.emit(1 + n % 7)
            outcome = await h.poll()
            assert outcome.ok, outcome.error
            announced += [str(c.key) for c in outcome.changes]
            counts = await h.store.tracked_counts()
            assert counts["feed"].seen_keys <= 30
            assert outcome.remembered is not None and outcome.remembered <= 30
        assert len(announced) == len(set(announced)) == fake.next_id - 26


async def test_remember_forgets_by_age_but_never_what_the_answer_holds(
    tmp_path: Path, log_api: tuple[EventLogAPI, TestServer]
) -> None:
    """Keys older than remember are dropped unless the latest answer still lists them."""
    fake, server = log_api
    # unconditional: a 304 would leave the remembered keys as they are (nothing to prune for)
    config = _config(tmp_path, server, remember="1h", conditional=False)
    async with running(config) as h:
        await h.poll()  # remembers 25..16 (page 1)
        fake.emit(10)  # page 1 is now 35..26: all new; page 2 holds 25..16, seen
        await h.poll()
        assert (await h.store.tracked_counts())["feed"].seen_keys == 20
        h.clock.advance(2 * 3600)
        outcome = await h.poll()  # page 1 only: 25..16 are past remember and not in it
        assert outcome.result == "ok" and outcome.changes == []
        assert (await h.store.tracked_counts())["feed"].seen_keys == 10
        h.clock.advance(30 * 24 * 3600)
        quiet = await h.poll()  # the page's own keys stay, however old
        assert quiet.changes == []
        assert (await h.store.tracked_counts())["feed"].seen_keys == 10


async def test_a_dry_run_records_nothing(
    tmp_path: Path, log_api: tuple[EventLogAPI, TestServer]
) -> None:
    """poll without commit shows the new entries but remembers none of them."""
    fake, server = log_api
    config = _config(tmp_path, server)
    async with baselined(config) as h:
        fake.emit(2)
        dry = await h.poll(commit=False)
        assert len(dry.changes) == 2 and not dry.committed
        real = await h.poll()
        assert len(real.changes) == 2 and real.committed


async def test_switching_to_append_drops_the_snapshot_and_back_drops_the_keys(
    tmp_path: Path, log_api: tuple[EventLogAPI, TestServer]
) -> None:
    """A change of mode re-baselines: append keeps keys, not items; snapshot keeps items."""
    _fake, server = log_api
    snapshot = _config(tmp_path, server, mode=None)
    async with baselined(snapshot) as h:
        assert len((await h.store.load_hashes("feed")).hashes) == 25
        h.reconfigure(_config(tmp_path, server))
        outcome = await h.poll()
        assert outcome.result == "rebaseline" and outcome.changes == []
        assert (await h.store.load_hashes("feed")).hashes == {}
        assert (await h.store.tracked_counts())["feed"].seen_keys == 10
        h.reconfigure(_config(tmp_path, server, mode=None))
        back = await h.poll()
        assert back.result == "rebaseline"
        assert "feed" not in await h.store.tracked_counts()
        assert len((await h.store.load_hashes("feed")).hashes) == 25


async def test_stop_at_seen_ends_a_walk_whose_cursor_is_in_the_body(tmp_path: Path) -> None:
    """A POST (or GraphQL) log paged by a body cursor stops like a linked one."""
    log = [{"id": i} for i in range(10, 0, -1)]  # newest first

    def audit(req):  # type: ignore[no-untyped-def]
        body = json.loads(req.body)
        start = int((body.get("page") or {}).get("cursor") or 0)
        more = start + 3 < len(log)
        return Reply(
            200, {"results": log[start : start + 3], "next": str(start + 3) if more else None}
        )

    with serve(audit) as server:
        audit_log = source(
            "audit",
            server.url("/audit"),
            every="1m",
            method="POST",
            body={"kind": "audit"},
            items="$.results[*]",
            mode="append",
            paginate={"kind": "cursor", "cursor": "$.next", "body_param": "page.cursor"},
        )
        async with running(make_config(tmp_path, audit_log)) as h:
            first = await h.poll()
            assert (first.result, first.pages) == ("baseline", 1)
            log[:0] = [{"id": i} for i in range(14, 10, -1)]
            outcome = await h.poll()
            assert outcome.pages == 2 and outcome.stopped
            assert [c.key_text for c in outcome.changes] == ["14", "13", "12", "11"]
