"""Event-log sources and confirmed deletes, end to end: the real daemon against a newest-first
log with pagination and a blinking list, webhooks to a real receiver."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess, eventually, run_cli
from tests.support.event_logs import BlinkingList, EventLogAPI
from tests.support.servers import Request, TestServer, serve
from tests.support.state import StateView, is_postgres

pytestmark = pytest.mark.e2e

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _state(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "state.db")


def _config(tmp_path: Path, state: str, api: TestServer, hooks: TestServer) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source(
            "feed",
            api.url("/events"),
            every="150ms",
            items=None,
            mode="append",
            event_type="github.event",
            raw='[sources.paginate]\nkind = "link"',
        ),
        listener("events", hooks.url("/events"), events=["github.event"], retry=["100ms"] * 50),
        # a listener of created items only: an append source's named events are not for it
        listener("created", hooks.url("/created"), events=["created"]),
        state=state,
        shutdown_grace="5s",
        # PostgreSQL: a killed instance's source lease runs out soon, so its restart polls
        **({"lease": "2s"} if is_postgres(state) else {}),
    )


def _page(r: Request) -> int:
    return int((r.query.get("page") or ["1"])[0])


def _log_requests(api: TestServer) -> list[Request]:
    return [r for r in list(api.requests) if r.path == "/events"]


def _keys(hooks: TestServer) -> Counter[str]:
    return Counter(json.loads(r.body)["key"] for r in list(hooks.requests) if r.path == "/events")


def _baselined(view: StateView, name: str = "feed") -> bool:
    if not view.exists():
        return False
    s = view.sources().get(name)
    return s is not None and s.last_success_at is not None


@contextmanager
def _after_baseline(config: Path, view: StateView, name: str = "feed") -> Iterator[DaemonProcess]:
    """The daemon on ``config``, once its first poll of ``name`` has succeeded."""
    with DaemonProcess(config) as daemon:
        eventually(lambda: _baselined(view, name), 20, "the baseline", daemon.output)
        yield daemon


def test_a_quiet_log_costs_one_request_per_poll_and_new_entries_arrive_once(tmp_path: Path):
    """After the silent baseline every poll asks for page 1 only; a burst larger than a page is
    read up to the first page holding a seen entry, and each new entry is one webhook."""
    log = EventLogAPI(25, page_size=10)
    with serve(log) as api, serve() as hooks:
        state = str(tmp_path / "state.db")
        config = _config(tmp_path, state, api, hooks)
        view = StateView(state)
        with _after_baseline(config, view) as daemon:
            quiet_from = len(_log_requests(api))
            api.wait_for(lambda rs: len([r for r in rs if r.path == "/events"]) >= quiet_from + 6)
            quiet = _log_requests(api)[quiet_from:]
            assert {_page(r) for r in quiet} == {1}, "a quiet poll asked for more than page 1"
            new = log.emit(13)
            hooks.wait_for(lambda _rs: len(_keys(hooks)) >= 13, 20)
            burst_from = len(_log_requests(api))
            api.wait_for(lambda rs: len([r for r in rs if r.path == "/events"]) >= burst_from + 4)
            assert daemon.terminate() == 0, daemon.output()
        assert _keys(hooks) == Counter({key: 1 for key in new})
        body = json.loads(next(r for r in hooks.requests if r.path == "/events").body)
        assert body["type"] == "github.event" and body["source"] == "feed"
        assert body["data"]["before"] is None and body["data"]["after"]["type"] == "PushEvent"
        assert not [r for r in hooks.requests if r.path == "/created"]
        # the burst walked pages 1 and 2 (page 2 holds entries already seen), never page 3
        assert 3 not in {_page(r) for r in _log_requests(api)[quiet_from:]}
        assert {_page(r) for r in _log_requests(api)[burst_from:]} == {1}

        status = run_cli("status", "--config", str(config), "--json")
        assert status.returncode == 0, status.stderr
        (row,) = json.loads(status.stdout)["sources"]
        assert row["seen_keys"] == 23  # the baseline's page 1 (10) and the 13 new entries
        text = run_cli("status", "--config", str(config))
        assert "23 seen key(s)" in text.stdout
        listed = run_cli("events", "--type", "github.event", "--config", str(config), "--json")
        assert listed.returncode == 0, listed.stderr
        docs = json.loads(listed.stdout)
        assert sorted(d["key"] for d in docs) == sorted(new)
        assert {d["type"] for d in docs} == {"github.event"}
        created = run_cli("events", "--type", "created", "--config", str(config), "--json")
        assert json.loads(created.stdout) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_in_the_middle_of_an_append_poll_loses_and_repeats_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
):
    """SIGKILL while page 2 of a burst is on its way (nothing committed), then again right
    after a commit: after restarts every new entry was recorded and sent exactly once."""
    log = EventLogAPI(25, page_size=10)
    with serve(log) as api, serve() as hooks:
        state = _state(backend, tmp_path, request)
        config = _config(tmp_path, state, api, hooks)
        view = StateView(state)
        sent: list[str] = []
        with _after_baseline(config, view) as daemon:
            log.slow_pages = {2: 30.0}
            sent += log.emit(13)
            api.wait_for(lambda rs: any(r.path == "/events" and _page(r) == 2 for r in rs), 20)
            daemon.kill()
        assert view.events(source="feed") == []  # the poll died before its commit
        log.slow_pages = {}
        with DaemonProcess(config) as daemon:
            eventually(
                lambda: len(view.events(source="feed")) >= 13, 20, "13 events", daemon.output
            )
            sent += log.emit(4)
            eventually(
                lambda: len(view.events(source="feed")) >= 17, 20, "17 events", daemon.output
            )
            daemon.kill()  # just after a commit, perhaps before any delivery
        with DaemonProcess(config) as daemon:
            hooks.wait_for(lambda _rs: len(_keys(hooks)) >= 17, 30)
            more_from = len(_log_requests(api))
            api.wait_for(lambda rs: len([r for r in rs if r.path == "/events"]) >= more_from + 5)
            assert daemon.terminate() == 0, daemon.output()
        events = view.events(source="feed")
        assert sorted(str(r.event.key) for r in events) == sorted(sent)
        assert {r.event.name for r in events} == {"github.event"}
        # deliveries are at least once: a kill between send and record may repeat one, but
        # each repeat is the same event id, and every entry arrived
        ids: dict[str, set[str]] = {}
        for r in hooks.requests:
            if r.path == "/events":
                body = json.loads(r.body)
                ids.setdefault(body["key"], set()).add(body["id"])
        assert set(ids) == set(sent)
        assert all(len(v) == 1 for v in ids.values()), "an entry became two events"


def test_a_blinking_list_deletes_only_what_stays_missing(tmp_path: Path):
    """confirm_deletes = 2: an item left out of one answer sends nothing; an item gone for
    good is one item.deleted, sent on the second poll without it."""
    blinking = BlinkingList(12)
    with serve(blinking) as api, serve() as hooks:
        state = str(tmp_path / "state.db")
        config = write_config(
            tmp_path / "pollbridge.toml",
            source("tickets", api.url("/items"), every="150ms", confirm_deletes=2),
            listener("hooks", hooks.url("/hooks")),
            state=state,
        )
        view = StateView(state)
        with _after_baseline(config, view, "tickets") as daemon:
            for _ in range(3):
                blinking.blink([3, 7], answers=1)
                start = len(api.requests)
                api.wait_count(start + 3)
            dry = run_cli("poll", "tickets", "--config", str(config))
            assert dry.returncode == 0, dry.stderr
            blinking.remove([5])
            hooks.wait_count(1, 20)
            start = len(api.requests)
            api.wait_count(start + 4)
            assert daemon.terminate() == 0, daemon.output()
        bodies = [json.loads(r.body) for r in hooks.requests]
        assert [(b["type"], b["key"]) for b in bodies] == [("item.deleted", "5")]
        assert set(view.items("tickets")) == {str(i) for i in range(1, 13)} - {"5"}


def test_check_and_a_dry_run_show_what_an_append_source_would_do(tmp_path: Path):
    """check summarises mode and window; poll (dry run) lists the new entries and remembers
    none of them."""
    log = EventLogAPI(5, page_size=10)
    with serve(log) as api, serve() as hooks:
        state = str(tmp_path / "state.db")
        config = _config(tmp_path, state, api, hooks)
        check = run_cli("check", "--config", str(config))
        assert check.returncode == 0, check.stderr
        assert (
            "mode: append: each new entry is one github.event event, never updated or deleted; "
            "remembers seen keys 30d, at most 100000" in check.stdout
        )
        doc = json.loads(run_cli("check", "--config", str(config), "--json").stdout)
        assert doc["sources"][0]["append"] == {
            "event_type": "github.event",
            "remember": "30d",
            "remember_count": 100000,
            "stop_at_seen": True,
        }
        first = run_cli("poll", "feed", "--config", str(config), "--commit")
        assert first.returncode == 0, first.stderr
        log.emit(2)
        dry = run_cli("poll", "feed", "--config", str(config))
        assert dry.returncode == 0, dry.stderr
        lines = [json.loads(line) for line in dry.stdout.splitlines()]
        assert [(d["type"], d["key"]) for d in lines] == [
            ("github.event", "7"),
            ("github.event", "6"),
        ]
        assert "append: 2 new github.event entr(ies) in 1 page(s)" in dry.stderr
        assert "7 key(s) would be remembered" in dry.stderr
        again = run_cli("poll", "feed", "--config", str(config))
        assert len(again.stdout.splitlines()) == 2  # the dry run recorded nothing


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_at_random_moments_of_a_busy_log(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
):
    """A log that keeps growing, the daemon SIGKILLed at random moments and restarted: in the
    end every entry is one event, none missing and none twice."""
    rng = random.Random(1515)
    log = EventLogAPI(25, page_size=10)
    with serve(log) as api, serve() as hooks:
        state = _state(backend, tmp_path, request)
        config = _config(tmp_path, state, api, hooks)
        view = StateView(state)
        sent: list[str] = []
        with _after_baseline(config, view) as daemon:
            daemon.kill()
        for _ in range(5):
            with DaemonProcess(config) as daemon:
                for _ in range(rng.randint(1, 4)):
                    sent += log.emit(rng.randint(1, 12))
                    time.sleep(rng.uniform(0.0, 0.3))
                daemon.kill()
        with DaemonProcess(config) as daemon:
            eventually(
                lambda: len(view.events(source="feed")) >= len(sent),
                30,
                "every event",
                daemon.output,
            )
            more_from = len(_log_requests(api))
            api.wait_for(lambda rs: len([r for r in rs if r.path == "/events"]) >= more_from + 4)
            assert daemon.terminate() == 0, daemon.output()
        keys = [str(r.event.key) for r in view.events(source="feed")]
        assert sorted(keys) == sorted(sent)
