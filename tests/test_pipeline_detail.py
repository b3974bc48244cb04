"""Detail fetch: one request per new or changed list entry, the detail is the item."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tests.support.configs import source
from tests.support.fake_graphql import FakeDetailAPI
from tests.support.pipelines import baselined, make_config, running
from tests.support.servers import Reply, Request, serve


def _detail(base: str, **fields: Any) -> dict[str, Any]:
    return {"url": base + "/orders/{id}", "items": "$.order", **fields}


def _orders(
    base: str, *, key: str | None = "$.id", detail: dict[str, Any] | None = None, **fields: Any
) -> str:
    """The ``orders`` source: a list at /orders, each entry's detail at /orders/{id}."""
    detail = _detail(base) if detail is None else detail
    return source(
        "orders",
        f"{base}/orders",
        every="1m",
        items="$.orders[*]",
        key=key,
        detail=detail,
        **fields,
    )


def _config(tmp_path: Path, base: str, **fields: Any):  # type: ignore[no-untyped-def]
    return make_config(tmp_path, _orders(base, **fields))


def _set(api: FakeDetailAPI, number: int, **changes: object) -> None:
    with api.lock:
        api.orders[number] = {**api.orders[number], **changes}


async def test_details_are_the_items_and_unchanged_entries_are_not_fetched(tmp_path):
    """Baseline fetches every detail; later polls fetch only new or changed list entries."""
    api = FakeDetailAPI(count=5)
    with serve(api) as server:
        config = _config(tmp_path, server.url("").rstrip("/"))
        async with running(config) as h:
            first = await h.poll()
            assert (first.result, first.item_count, first.detail_fetches) == ("baseline", 5, 5)
            stored = await h.store.load_items("orders", ["2"])
            assert stored["2"][1] == {
                "id": 2,
                "updated_at": "2024-05-01T00:00:02Z",
                "total": 20,
                "note": "",
            }
            again = await h.poll()
            assert (again.result, again.detail_fetches) == ("unchanged", 0)
            _set(api, 2, updated_at="2024-05-02T00:00:00Z", total=25)
            with api.lock:
                api.orders[9] = {
                    "id": 9,
                    "updated_at": "2024-05-02T00:00:09Z",
                    "total": 90,
                    "note": "",
                }
                del api.orders[4]
            changed = await h.poll()
    assert changed.detail_fetches == 2, changed.error
    assert sorted((c.type, c.key_text) for c in changed.changes) == [
        ("created", "9"),
        ("deleted", "4"),
        ("updated", "2"),
    ]
    update = next(c for c in changed.changes if c.type == "updated")
    assert {"op": "replace", "path": "/total", "value": 25} in update.changes
    assert api.detail_requests == {1: 1, 2: 2, 3: 1, 4: 1, 5: 1, 9: 1}


async def test_a_changed_entry_with_an_unchanged_detail_is_fetched_once(tmp_path):
    """The new list hash is stored without an event, so the entry is not fetched again."""
    api = FakeDetailAPI(count=3)
    with serve(api) as server:
        config = _config(tmp_path, server.url("").rstrip("/"), ignore=["$.updated_at"])
        async with baselined(config) as h:
            _set(api, 1, updated_at="2024-06-01T00:00:00Z")  # only the ignored field moves
            touched = await h.poll()
            settled = await h.poll()
            events = await h.events()
    assert (touched.result, touched.changes, touched.detail_fetches) == ("unchanged", [], 1), (
        touched.error
    )
    assert (settled.result, settled.detail_fetches) == ("unchanged", 0)
    assert events == []
    assert api.detail_requests[1] == 2


async def test_a_failing_detail_fetch_records_nothing_and_the_next_poll_recovers(tmp_path):
    """One detail answering 500 fails the poll whole; the next poll fetches it again."""
    api = FakeDetailAPI(count=4)
    with serve(api) as server:
        config = _config(tmp_path, server.url("").rstrip("/"))
        async with baselined(config) as h:
            version = await h.store.snapshot_version("orders")
            _set(api, 2, updated_at="2024-05-03T00:00:00Z", total=1)
            _set(api, 3, updated_at="2024-05-03T00:00:00Z", total=2)
            api.fail_detail[3] = Reply(500, {"error": "boom"})
            failed = await h.poll()
            assert await h.store.snapshot_version("orders") == version
            assert await h.events() == []
            api.fail_detail.clear()
            recovered = await h.poll()
    assert (
        not failed.ok and "HTTP 500" in (failed.error or "") and "/orders/3" in (failed.error or "")
    )
    assert not failed.committed
    assert sorted(c.key_text for c in recovered.changes) == ["2", "3"]
    assert recovered.detail_fetches == 2


async def test_a_dry_run_fetches_details_but_records_nothing(tmp_path):
    """poll without commit reports its detail requests; the next real poll fetches again."""
    api = FakeDetailAPI(count=3)
    with serve(api) as server:
        config = _config(tmp_path, server.url("").rstrip("/"))
        async with running(config) as h:
            dry = await h.poll(commit=False)
            real = await h.poll()
    assert (dry.result, dry.detail_fetches, dry.committed) == ("baseline", 3, False)
    assert (real.result, real.detail_fetches) == ("baseline", 3)


async def test_changing_detail_rebaselines_and_fetches_everything(tmp_path):
    """A new detail URL or items path is a new definition of the items: every detail again."""
    api = FakeDetailAPI(count=3)
    with serve(api) as server:
        base = server.url("").rstrip("/")
        async with baselined(_config(tmp_path, base)) as h:
            h.reconfigure(_config(tmp_path, base, detail=_detail(base, concurrency=2)))
            same = await h.poll()
            changed_config = _config(tmp_path, base, detail={"url": base + "/orders/{$.id}"})
            h.reconfigure(changed_config)
            rebased = await h.poll()
            stored = await h.store.load_items("orders", ["1"])
    assert (same.result, same.detail_fetches) == ("unchanged", 0)  # concurrency is not identity
    assert (rebased.result, rebased.detail_fetches) == ("rebaseline", 3), rebased.error
    assert set(stored["1"][1]) == {"order"}  # items = "$" (the default): the whole body


async def test_placeholder_values_are_url_encoded(tmp_path):
    """A key holding '/', '?' or spaces stays one path segment of the detail URL."""
    seen: list[str] = []

    def handler(req: Request) -> Reply:
        if req.path == "/list":
            return Reply(200, [{"sku": "a/b c?d"}])
        seen.append(req.path)
        return Reply(200, {"sku": "a/b c?d", "stock": 3})

    with serve(handler) as server:
        base = server.url("").rstrip("/")
        stock = source(
            "stock",
            f"{base}/list",
            every="1m",
            items=None,
            key="$.sku",
            detail={"url": base + "/sku/{sku}/stock"},
        )
        config = make_config(tmp_path, stock)
        async with running(config) as h:
            outcome = await h.poll()
        raw_paths = [r.path for r in server.requests]
    assert outcome.ok, outcome.error
    assert outcome.detail_fetches == 1
    assert [p for p in raw_paths if p.startswith("/sku")] == ["/sku/a%2Fb%20c%3Fd/stock"]
    assert len(seen) == 1


async def test_detail_requests_are_bounded_by_concurrency(tmp_path):
    """No more than detail.concurrency detail requests of a poll are in flight at once."""
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def handler(req: Request) -> Reply:
        if req.path == "/orders":
            return Reply(200, {"orders": [{"id": i} for i in range(1, 13)]})
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)  # held open, so that unbounded requests would overlap
        with lock:
            state["now"] -= 1
        return Reply(200, {"order": {"id": req.path.rsplit("/", 1)[1]}})

    with serve(handler) as server:
        base = server.url("").rstrip("/")
        orders = _orders(base, key=None, detail=_detail(base, concurrency=3))
        config = make_config(tmp_path, orders, per_host_concurrency=8)
        async with running(config) as h:
            outcome = await h.poll()
    assert outcome.ok and outcome.detail_fetches == 12, outcome.error
    assert 1 <= state["peak"] <= 3


async def test_detail_requests_carry_the_sources_auth_and_headers(tmp_path):
    """Bearer token and extra headers go with every detail request, as with the list."""
    api = FakeDetailAPI(count=2)
    with serve(api) as server:
        base = server.url("").rstrip("/")
        orders = _orders(
            base,
            key=None,
            detail={"url": base + "/orders/{id}?expand=lines", "items": "$.order"},
            headers={"X-Tenant": "acme"},
            auth={"kind": "bearer", "token": "tok-detail-1"},
        )
        config = make_config(tmp_path, orders)
        async with running(config) as h:
            outcome = await h.poll()
    assert outcome.ok and outcome.detail_fetches == 2, outcome.error
    details = [r for r in server.requests if r.path.startswith("/orders/")]
    assert len(details) == 2
    for r in details:
        assert r.method == "GET"
        assert r.headers["authorization"] == "Bearer tok-detail-1"
        assert r.headers["x-tenant"] == "acme"
        assert r.query == {"expand": ["lines"]}


async def test_a_429_on_a_detail_postpones_the_source(tmp_path):
    """Retry-After on a detail request is honoured like one on the list."""
    api = FakeDetailAPI(count=2)
    api.fail_detail[2] = Reply(429, {"error": "slow down"}, {"retry-after": "120"})
    with serve(api) as server:
        config = _config(tmp_path, server.url("").rstrip("/"))
        async with running(config) as h:
            outcome = await h.poll()
            now = h.clock()
            state = await h.store.get_source_state("orders")
    assert not outcome.ok and "HTTP 429" in (outcome.error or "")
    assert "detail of item '2'" in (outcome.error or "")
    assert outcome.not_before is not None
    assert (outcome.not_before - now).total_seconds() >= 120
    assert state is not None and state.fingerprint is None  # nothing recorded: still no baseline


async def test_a_detail_without_the_item_fails_the_poll(tmp_path):
    """detail.items matching nothing in a detail answer fails the poll, naming the item."""
    api = FakeDetailAPI(count=2)
    api.fail_detail[1] = Reply(200, {"unexpected": True})
    with serve(api) as server:
        config = _config(tmp_path, server.url("").rstrip("/"))
        async with running(config) as h:
            outcome = await h.poll()
    assert not outcome.ok
    assert "detail of item '1': detail.items '$.order' matched nothing" in (outcome.error or "")
