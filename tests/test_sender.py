"""The webhook sender over the daemon's listener client (httpx API, aiohttp transport)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import respx
from standardwebhooks.webhooks import Webhook

from bridge.config import ListenerConfig
from bridge.core.payload import build_payload
from bridge.http import sender as sender_module
from bridge.http.connections import ClientPool
from bridge.http.sender import Sender
from bridge.http.templates import RENDER_THREADS
from bridge.models import Event
from tests.support.servers import Reply, serve

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _event() -> Event:
    return Event(
        id="evt_01JD0000000000000000000000",
        seq=1,
        source="orders",
        key="42",
        type="created",
        timestamp=NOW,
        before=None,
        after={"id": "42", "n": 1},
        changes=[{"op": "replace", "path": "", "value": {"id": "42", "n": 1}}],
    )


@contextlib.asynccontextmanager
async def new_send_client(connections: int) -> AsyncIterator[httpx.AsyncClient]:
    """The daemon's listener client (aiohttp transport), closed afterwards."""
    pool = ClientPool(httpx.Limits(max_connections=connections))
    try:
        yield pool.get()
    finally:
        await pool.aclose()


def _listener(url: str) -> ListenerConfig:
    return ListenerConfig(name="hook", url=url, secret=SECRET, headers={"x-team": "ops"})


async def test_send_client_delivers_a_verifiable_webhook() -> None:
    """The body and headers that arrive verify with a Standard Webhooks library."""
    with serve() as server:
        async with new_send_client(4) as client:
            result = await Sender(client).send(_listener(server.url("/h")), _event(), NOW)
        (request,) = server.wait_count(1)
    assert result.ok and result.status == 204
    assert request.body == build_payload(_event())
    assert request.headers["x-team"] == "ops"
    headers = {k: request.headers[k] for k in ("webhook-id", "webhook-timestamp")}
    headers["webhook-signature"] = request.headers["webhook-signature"]
    # verify() checks the timestamp against the clock; the signature itself is what we pin
    wh = Webhook(SECRET)
    expected = wh.sign(headers["webhook-id"], NOW, request.body.decode())
    assert expected in headers["webhook-signature"].split()


async def test_send_client_reports_status_and_excerpt_of_a_failure() -> None:
    """A non-2xx answer is a failed attempt with the status and the start of the body."""
    with serve(lambda _r: Reply(503, "busy", {"retry-after": "7"})) as server:
        async with new_send_client(1) as client:
            result = await Sender(client).send(_listener(server.url("/h")), _event(), NOW)
    assert not result.ok and result.status == 503
    assert result.response_excerpt == "busy"
    assert result.retry_after_s == 7


async def test_refused_connection_is_described_as_a_connection_failure() -> None:
    """A port nobody listens on reads as 'connection failed', not as a timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with new_send_client(1) as client:
        result = await Sender(client).send(_listener(f"http://127.0.0.1:{port}/h"), _event(), NOW)
    assert not result.ok and result.status is None
    assert result.error is not None and result.error.startswith("connection failed")


async def test_sender_works_over_a_respx_mocked_plain_client() -> None:
    """Sender takes any httpx client: tests mock sends with respx over httpx's own transport."""
    async with respx.mock() as mock:
        route = mock.post("http://hooks.test/h").mock(return_value=httpx.Response(202))
        async with httpx.AsyncClient() as client:
            result = await Sender(client).send(_listener("http://hooks.test/h"), _event(), NOW)
    assert result.ok and result.status == 202
    assert route.calls.last.request.headers["webhook-id"] == _event().id


async def test_sender_uses_the_transport_the_client_mounts_for_the_url() -> None:
    """Sends go through the client's transport for the URL (mounts, env proxies), not around it."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    mounts = {"http://hooks.test": httpx.MockTransport(handler)}
    async with httpx.AsyncClient(mounts=mounts) as client:
        result = await Sender(client).send(_listener("http://hooks.test/h"), _event(), NOW)
    assert result.ok and result.status == 204
    assert [r.url.path for r in seen] == ["/h"]
    assert seen[0].content == build_payload(_event())


async def test_refused_delivery_is_in_our_words_without_ssl_default() -> None:
    """A refused http:// listener reads 'cannot connect to host:port', not aiohttp's text."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with new_send_client(1) as client:
        result = await Sender(client).send(_listener(f"http://127.0.0.1:{port}/h"), _event(), NOW)
    assert (
        result.error == f"connection failed: cannot connect to 127.0.0.1:{port}: connection refused"
    )


def _template_listener(url: str, template: str) -> ListenerConfig:
    return ListenerConfig(name="hook", url=url, template=template, content_type="text/plain")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "range()",
        ),
        ("{{ (data.after.n + 9) ** 99999999 }}", "bits"),
        ("{{ 'x' * (data.after.n * 1500000000) }}", "repeating a value"),
    ],
)
async def test_a_hostile_template_fails_only_its_delivery(template: str, reason: str) -> None:
    """Huge loops, powers and repetitions fail the delivery (no retry) fast, in bounded memory."""
    with serve() as server:
        async with new_send_client(1) as client:
            tracemalloc.start()
            try:
                result = await Sender(client).send(
                    _template_listener(server.url("/h"), template), _event(), NOW
                )
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    assert not result.ok and not result.retryable and not result.sent
    assert result.error is not None and reason in result.error
    assert peak < 64 << 20
    assert server.requests == []


async def test_a_template_past_its_deadline_fails_while_the_loop_runs(monkeypatch) -> None:
    """A render still running at its deadline fails; the event loop went on meanwhile."""
    monkeypatch.setattr(sender_module, "RENDER_TIMEOUT_S", 0.3)
    template = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    with serve() as server:
        async with new_send_client(1) as client:
            result = await Sender(client).send(
                _template_listener(server.url("/h"), template), _event(), NOW
            )
    ticker.cancel()
    assert not result.ok and not result.retryable
    assert result.error is not None and "longer than" in result.error
    assert ticks > 0  # the loop ran while the template did


async def test_a_loop_the_sandbox_cannot_see_is_stopped_at_the_deadline(monkeypatch) -> None:
    """Nested loops over the event's own lists are stopped in their thread, not left running."""
    monkeypatch.setattr(sender_module, "RENDER_TIMEOUT_S", 0.3)
    event = dataclasses.replace(_event(), after={"id": "42", "n": 1, "tags": list(range(2000))})
    template = (
        "{% for a in data.after.tags %}{% for b in data.after.tags %}{% for c in data.after.tags %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    with serve() as server:
        async with new_send_client(1) as client:
            result = await Sender(client).send(
                _template_listener(server.url("/h"), template), event, NOW
            )
    assert not result.ok and not result.retryable
    assert result.error is not None and "longer than 0.3s" in result.error
    # both render threads are free again: two jobs that wait for each other both finish
    barrier = threading.Barrier(2, timeout=10)
    both = [RENDER_THREADS.submit(barrier.wait) for _ in range(2)]
    assert sorted(f.result(timeout=15) for f in both) == [0, 1]
