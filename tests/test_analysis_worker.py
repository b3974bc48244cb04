"""Large responses analysed in a worker process: the same results as in process, and a worker
that dies or hangs fails only its poll, with nothing recorded."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.config import load_config
from bridge.outcome import PollOutcome
from bridge.runtime import Services
from bridge.store import Store, create_store
from tests.support.configs import config_text, listener, source, write_config
from tests.support.rawserver import RawRequest, serve_raw
from tests.support.servers import Reply, Request, serve

DATA = Path(__file__).parent / "data" / "formats"
FAILING_WORKER = Path(__file__).parent / "support" / "failing_worker.py"
ROWS = "$.data.rows[*]"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Body:
    """What the test API answers; tests change it between polls."""

    def __init__(self, body: bytes = b"[]", content_type: str = "application/json") -> None:
        self.body = body
        self.content_type = content_type

    def __call__(self, _req: Request) -> Reply:
        return Reply(200, self.body, {"content-type": self.content_type})


def _items(n: int, changed: int = 0, dropped: int = 0) -> bytes:
    items = [
        {"id": f"k{i:05d}", "n": i, "price": i / 7, "tags": ["a"] * (i % 3), "seen": "t0"}
        for i in range(dropped, n)
    ]
    for item in items[:changed]:
        item["n"] = -item["n"] - 1
    items.append({"id": "extra", "n": 1.5e300, "nested": {"x": [None, True, "é"]}})
    return orjson.dumps({"meta": {"count": len(items)}, "data": {"rows": items}})


def _config_text(state: str, url: str, *, workers: int, **source_fields: Any) -> str:
    """One source ``big`` (``source_fields``: its further keys) and a listener."""
    fields = {"every": "1h", "items": None, "timeout": "10s", **source_fields}
    return config_text(
        state,
        source("big", url, **fields),
        listener("sink", "http://127.0.0.1:9/hook", secret=SECRET),
        shutdown_grace=None,
        analysis_workers=workers,
        analysis_worker_min_bytes=1,
    )


@dataclass
class Bridge:
    services: Services
    store: Store

    async def poll(self, *, commit: bool = True) -> PollOutcome:
        config = self.services.config
        return await self.services.pipeline.poll(config.sources[0], commit=commit)

    async def stored(self) -> tuple[dict[str, str], dict[str, Any]]:
        hashes = (await self.store.load_hashes("big")).hashes
        items = await self.store.load_items("big", sorted(hashes))
        return hashes, items


@asynccontextmanager
async def bridge(
    tmp_path: Path, url: str, *, workers: int, state: str | None = None, **source_fields: Any
) -> AsyncIterator[Bridge]:
    """Services over :func:`_config_text` (the state: ``s.db`` in ``tmp_path`` unless given)."""
    state = state or str(tmp_path / "s.db")
    path = tmp_path / f"pollbridge-{workers}.toml"
    path.write_text(_config_text(state, url, workers=workers, **source_fields))
    config = load_config(path, {})
    store = create_store(config.state_location)
    await store.open()
    services = Services(config, store, deliver=False)
    try:
        yield Bridge(services, store)
    finally:
        await services.aclose()
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def states(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """Two independent state locations of the parametrized kind, by name."""
    if request.param == "sqlite":
        return lambda name: str(tmp_path / f"{name}.db")
    from tests.support.pg import drop_schema, schema_url

    dsn = request.getfixturevalue("pg_dsn")
    made: list[str] = []

    def location(name: str) -> str:
        schema = f"{request.getfixturevalue('pg_schema')}_{name}"
        made.append(schema)
        return schema_url(dsn, schema)

    request.addfinalizer(lambda: [drop_schema(dsn, s) for s in made])
    return location


def _changes(outcome: PollOutcome) -> list[tuple[Any, ...]]:
    return [
        (c.type, c.key, c.key_text, c.before, c.after, c.changes, c.hash) for c in outcome.changes
    ]


def _summary(outcome: PollOutcome) -> tuple[Any, ...]:
    return (outcome.ok, outcome.result, outcome.item_count, outcome.error, outcome.committed)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_worker_and_in_process_record_the_same(
    tmp_path: Path, states: Callable[[str], str], streamed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls analysed in a worker give the same outcomes, events and stored items as in process."""
    spools = tmp_path / "spool"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    api = Body()
    fields = {"items": ROWS, "ignore": ["$.seen"], "baseline": "emit"}
    versions = [
        _items(300),
        _items(300, changed=5),
        _items(300, changed=5),  # unchanged
        _items(300, changed=9, dropped=20),  # updates and deletes
    ]
    with serve(api) as server:
        url = server.url("/items")
        async with (
            bridge(tmp_path, url, state=states("inproc"), workers=0, **fields) as inproc,
            bridge(tmp_path, url, state=states("apart"), workers=1, **fields) as apart,
        ):
            apart.services.analysis.stream_min_bytes = 0 if streamed else 1 << 40
            for body in versions:
                api.body = body
                for commit in (False, True):
                    a = await inproc.poll(commit=commit)
                    b = await apart.poll(commit=commit)
                    assert a.ok, a.error
                    assert _summary(a) == _summary(b)
                    assert _changes(a) == _changes(b)
                assert await inproc.stored() == await apart.stored()
            assert apart.services.analysis.idle_pids, "the polls went through a worker"
            assert not list(spools.iterdir()), "every spooled body was removed"


async def test_a_worker_reuses_the_hashes_it_holds_and_gets_only_a_commits_change(
    tmp_path: Path, states: Callable[[str], str]
) -> None:
    """The worker keeps the previous hashes between polls of a source: a poll after a commit
    sends only that commit's change, one after no commit (unchanged, a dry run, a held mass
    delete) sends none, and anything else sends all; every poll ends exactly as in process."""
    api = Body(_items(300))
    fields = {"items": ROWS}
    # what the worker holds is the snapshot its last job compared with: after a commit it
    # needs that commit's change; after none, nothing
    steps = [
        (_items(300), True, "full"),  # the baseline: it holds nothing yet
        (_items(300, changed=5), True, "step"),  # the baseline's change (small: 301 pairs)
        (_items(300, changed=9, dropped=3), True, "step"),  # updates and deletes
        (_items(300, changed=9, dropped=3), True, "step"),  # unchanged: nothing committed
        (_items(300, changed=12, dropped=3), False, "kept"),  # a dry run commits nothing
        (_items(300, changed=12, dropped=3), True, "kept"),
        (_items(300, changed=12, dropped=250), True, "step"),  # held: would delete 247
        (_items(300, changed=1, dropped=3), True, "kept"),
    ]
    with serve(api) as server:
        url = server.url("/items")
        async with (
            bridge(tmp_path, url, state=states("inproc"), workers=0, **fields) as inproc,
            bridge(tmp_path, url, state=states("apart"), workers=1, **fields) as apart,
        ):
            pool = apart.services.analysis
            sent, results = [], []
            for body, commit, _ in steps:
                api.body = body
                a = await inproc.poll(commit=commit)
                b = await apart.poll(commit=commit)
                sent.append(pool.last_sent)
                results.append(b.result)
                assert a.ok and b.ok, (a.error, b.error)
                assert _summary(a) == _summary(b)
                assert _changes(a) == _changes(b)
                assert await inproc.stored() == await apart.stored()
            assert results[2:4] == ["ok", "unchanged"] and results[6] == "held", results
            assert sent == [want for *_, want in steps]
            # a worker that is replaced holds nothing: the next poll sends every hash again
            (pid,) = pool.idle_pids
            os.kill(pid, signal.SIGKILL)
            api.body = _items(300, changed=2, dropped=3)
            a, b = await inproc.poll(), await apart.poll()
            assert pool.last_sent == "full" and _changes(a) == _changes(b)
            assert await inproc.stored() == await apart.stored()


CORPUS = [
    ("rss2.xml", "rss", "application/rss+xml", "$[*]", "$.id"),
    ("atom.xml", "rss", "application/atom+xml", "$[*]", "$.id"),
    ("rss1.rdf", "auto", "application/rdf+xml", "$[*]", "$.id"),
    ("api.xml", "xml", "application/xml", "$.orders.order[*]", "$['@id']"),
    ("export.csv", "csv", "text/csv; charset=utf-8", "$[*]", "$.id"),
    ("events.jsonl", "jsonl", "application/x-ndjson", "$[*]", "$.id"),
    ("api.expected.json", "json", "application/json", "$.orders.order[*]", "$['@id']"),
    ("atom.expected.json", "auto", "application/json", "$[*]", "$.id"),
    ("export.expected.json", "json", "application/json", "$[*]", "$.id"),
    ("rss2.expected.json", "json", "application/json", "$[*]", "$.id"),
    ("malformed.json", "json", "application/json", "$[*]", "$.id"),
    ("malformed.jsonl", "jsonl", "application/x-ndjson", "$[*]", "$.id"),
    ("malformed.csv", "csv", "text/csv", "$[*]", "$.id"),
    ("malformed.xml", "xml", "application/xml", "$.orders.order[*]", "$['@id']"),
    ("malformed_feed.xml", "rss", "application/rss+xml", "$[*]", "$.id"),
    ("billion_laughs.xml", "xml", "application/xml", "$.a[*]", "$.id"),
    ("billion_laughs_feed.xml", "rss", "application/rss+xml", "$[*]", "$.id"),
]
REFUSED = {name for name, *_ in CORPUS if "malformed" in name or "laughs" in name}
REFUSED.add("events.jsonl")  # its third line is an array: no key at $.id


@pytest.mark.parametrize(
    ("name", "fmt", "ctype", "items", "key"), CORPUS, ids=[c[0] for c in CORPUS]
)
async def test_fixture_corpus_gives_the_same_results_in_a_worker(
    tmp_path: Path, name: str, fmt: str, ctype: str, items: str, key: str
) -> None:
    """Every fixture body (and every malformed one) ends the same in a worker as in process."""
    api = Body((DATA / name).read_bytes(), ctype)
    fields = {"format": fmt, "items": items, "key": key, "baseline": "emit"}
    with serve(api) as server:
        url = server.url("/feed")
        async with (
            bridge(tmp_path, url, state=str(tmp_path / "a.db"), workers=0, **fields) as a,
            bridge(tmp_path, url, state=str(tmp_path / "b.db"), workers=1, **fields) as b,
        ):
            b.services.analysis.stream_min_bytes = 0
            for _ in range(2):
                one, two = await a.poll(), await b.poll()
                assert _summary(one) == _summary(two)
                assert _changes(one) == _changes(two)
                assert one.ok == (name not in REFUSED), one.error
                assert await a.stored() == await b.stored()


@pytest.mark.parametrize("mode", ["crash", "hang", "memory"])
async def test_a_failing_worker_fails_its_poll_only(
    tmp_path: Path, states: Callable[[str], str], mode: str
) -> None:
    """A worker killed, out of memory or hanging past the source's timeout mid-analysis fails
    that poll with an error naming the source; nothing is recorded, the next poll succeeds."""
    api = Body(_items(50))
    marker = tmp_path / "failed-once"
    with serve(api) as server:
        async with bridge(
            tmp_path, server.url("/items"), state=states("s"), workers=1, items=ROWS, timeout="2s"
        ) as b:
            assert (await b.poll()).result == "baseline"
            before = await b.stored()
            b.services.analysis.command = (sys.executable, str(FAILING_WORKER), mode, str(marker))
            b.services.analysis.resize(0, 1)  # the idle real worker goes
            b.services.analysis.resize(1, 1)
            api.body = _items(50, changed=3)
            failed = await b.poll()
            assert not failed.ok and failed.result == "error"
            assert "source 'big'" in (failed.error or "")
            if mode == "crash":
                assert "was killed by SIGKILL" in (failed.error or "")
            elif mode == "memory":
                assert "ran out of memory; the worker is replaced" in (failed.error or "")
            else:
                assert "did not finish within the source's timeout of 2s" in (failed.error or "")
            assert not failed.events and not failed.committed
            assert await b.stored() == before
            state = await b.store.get_source_state("big")
            assert state is not None and state.consecutive_failures == 1
            stuck = int(marker.read_text())
            with pytest.raises(ProcessLookupError):
                os.kill(stuck, 0)  # the failed worker is gone, not left running
            ok = await b.poll()
            assert ok.ok and ok.result == "ok", ok.error
            assert len(ok.changes) == 3


async def test_a_worker_that_never_gets_ready_fails_the_poll_within_its_timeout(
    tmp_path: Path,
) -> None:
    """A worker stuck on start-up (never ready) is stopped after the source's timeout, the
    poll fails naming it and records nothing, and a working worker takes the next poll."""
    api = Body(_items(30))
    pids = tmp_path / "started"
    with serve(api) as server:
        async with bridge(tmp_path, server.url("/x"), workers=1, items=ROWS, timeout="1s") as b:
            assert (await b.poll()).result == "baseline"
            pool = b.services.analysis
            real = pool.command
            pool.command = (sys.executable, str(FAILING_WORKER), "start", str(pids))
            pool.resize(0, 1)  # the idle real worker goes
            pool.resize(1, 1)
            api.body = _items(30, changed=2)
            failed = await b.poll()
            assert not failed.ok and failed.result == "error"
            assert "source 'big'" in (failed.error or "")
            assert "did not start within 1s; it was stopped" in (failed.error or ""), failed.error
            assert not failed.events and not failed.committed
            for pid in map(int, pids.read_text().split()):
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)  # every stuck worker is gone, not left running
            pool.command = real
            ok = await b.poll()
            assert ok.ok and len(ok.changes) == 2, ok.error


async def test_a_worker_killed_while_idle_is_replaced_silently(tmp_path: Path) -> None:
    """A worker killed between polls costs no poll: the next one starts a new worker."""
    api = Body(_items(40))
    with serve(api) as server:
        async with bridge(tmp_path, server.url("/x"), workers=1, items=ROWS) as b:
            assert (await b.poll()).result == "baseline"
            (pid,) = b.services.analysis.idle_pids
            os.kill(pid, signal.SIGKILL)
            stat = Path(f"/proc/{pid}/stat")
            while stat.read_text().split(") ", 1)[1][0] != "Z":  # dead, not yet reaped
                await asyncio.sleep(0.01)
            api.body = _items(40, changed=2)
            outcome = await b.poll()
            assert outcome.ok and len(outcome.changes) == 2, outcome.error
            assert b.services.analysis.idle_pids != [pid]


async def test_a_body_over_max_bytes_is_refused_while_spooling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 MB with no content-length against max_bytes = 20MiB: refused after 20 MiB were read
    to the spool file, never held in memory, and the file is removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def endless(conn: socket.socket, _req: RawRequest) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
        )
        chunk = b'{"id": 1, "padding": "' + b"x" * 65000 + b'"},'
        conn.sendall(b'{"data": [')
        for _ in range(50_000_000 // len(chunk)):
            conn.sendall(chunk)

    with serve_raw(endless) as server:
        async with bridge(
            tmp_path, server.url("/huge"), workers=1, max_bytes="20MiB", items="$.data[*]"
        ) as b:
            b.services.analysis.min_bytes = 1 << 20
            tracemalloc.start()
            try:
                outcome = await b.poll()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert not outcome.ok
    assert "exceeds max_bytes = 20971520 (stopped reading)" in (outcome.error or "")
    assert peak < 8 * 2**20, f"{peak} bytes traced while reading a 20 MiB body to a file"
    assert not list(tmp_path.glob("pollbridge-body-*"))


async def test_without_workers_nothing_is_spooled(tmp_path: Path) -> None:
    """``analysis_workers = 0``: every response is analysed in process, as before."""
    api = Body(_items(30))
    with serve(api) as server:
        async with bridge(tmp_path, server.url("/x"), workers=0, items=ROWS) as b:
            assert b.services.analysis.spool_policy(b.services.config.sources[0]) is None
            assert (await b.poll()).result == "baseline"
            assert b.services.analysis.idle_pids == []


async def test_reload_resizes_the_pool(tmp_path: Path) -> None:
    """A reload that sets ``analysis_workers = 0`` stops the idle workers; polls go on in process."""
    api = Body(_items(30))
    with serve(api) as server:
        async with bridge(tmp_path, server.url("/x"), workers=1, items=ROWS) as b:
            assert (await b.poll()).result == "baseline"
            assert len(b.services.analysis.idle_pids) == 1
            path = tmp_path / "reloaded.toml"
            path.write_text(
                _config_text(str(tmp_path / "s.db"), server.url("/x"), workers=0, items=ROWS)
            )
            b.services.reconfigure(load_config(path, {}))
            assert b.services.analysis.idle_pids == []
            api.body = _items(30, changed=1)
            assert len((await b.poll()).changes) == 1
            await asyncio.sleep(0)


def _cli_config(tmp_path: Path, url: str, hook: str = "http://127.0.0.1:9/hook") -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("orders", url, every="300ms"),
        listener("hooks", hook, secret=SECRET),
        shutdown_grace="5s",
        log_level="debug",
        analysis_worker_min_bytes=1,
    )


def test_cli_poll_dry_run_and_commit_use_a_worker(tmp_path: Path, items_api: Any) -> None:
    """``pollbridge poll`` (dry run and --commit) with every response for a worker: the same
    baseline and changes as in process (the daemon test below sees the worker in its log)."""
    from tests.support.daemon import run_cli

    api, server = items_api
    api.set({"id": 1, "s": "a"}, {"id": 2, "s": "a"})
    config = _cli_config(tmp_path, server.url("/orders"))
    first = run_cli("poll", "orders", "--commit", "--config", str(config))
    assert first.returncode == 0, first.stderr
    api.set({"id": 1, "s": "b"}, {"id": 3, "s": "a"})
    dry = run_cli("poll", "orders", "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    lines = [orjson.loads(line) for line in dry.stdout.splitlines()]
    assert [(x["type"], x["key"]) for x in lines] == [
        ("item.updated", "1"),
        ("item.created", "3"),
        ("item.deleted", "2"),
    ]


@pytest.mark.e2e
def test_the_daemon_delivers_changes_analysed_in_a_worker(
    tmp_path: Path, items_api: Any, receiver: Any
) -> None:
    """``pollbridge run`` with every response analysed in a worker delivers each change once."""
    from tests.support.daemon import DaemonProcess

    api, api_server = items_api
    api.set({"id": 1, "s": "a"}, {"id": 2, "s": "a"})
    config = _cli_config(tmp_path, api_server.url("/orders"), receiver.url("/hooks"))
    with DaemonProcess(config) as daemon:
        api_server.wait_count(1)
        api.set({"id": 1, "s": "b"}, {"id": 3, "s": "a"})
        reqs = receiver.wait_count(3)
        code = daemon.terminate()
    assert code == 0, daemon.output()
    assert "analysed in worker" in daemon.output()
    assert sorted((r.json()["type"], r.json()["key"]) for r in reqs) == [
        ("item.created", "3"),
        ("item.deleted", "2"),
        ("item.updated", "1"),
    ]
