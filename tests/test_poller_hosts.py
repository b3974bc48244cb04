"""Per-host politeness in the poller: a concurrency limit and a least gap between requests."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import httpx

from bridge.http.poller import HostLimiter, Poller
from tests.support.servers import Reply, serve

NOW = datetime(2024, 5, 1, tzinfo=UTC)


async def test_min_interval_spaces_requests_to_one_host():
    """Requests to a host with min_interval = 1s start at least 1 s apart; others do not wait."""
    clock = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = HostLimiter(5, {"API.example.com": 1.0}, clock=lambda: clock[0], sleep=sleep)
    for _ in range(3):
        async with limiter.slot("https://api.example.com/x"):
            clock[0] += 0.25  # the request takes 250 ms
    async with limiter.slot("https://other.example.com/x"):
        pass
    assert slept == [0.75, 0.75]


async def test_concurrent_reservations_queue_up():
    """Concurrent sources reserve successive start times: 0, 1, 2 s later."""
    clock = [0.0]
    starts: list[float] = []

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)
        starts.append(seconds)

    limiter = HostLimiter(10, {"h.example": 1.0}, clock=lambda: clock[0], sleep=sleep)

    async def one() -> None:
        async with limiter.slot("http://h.example/"):
            pass

    await asyncio.gather(one(), one(), one())
    assert sorted(starts) == [1.0, 2.0]


async def test_per_host_concurrency_limits_requests_in_flight():
    """With per_host_concurrency = 2, at most two requests to one host are in flight at once."""
    lock = threading.Lock()
    in_flight = [0, 0]  # current, most seen

    def handler(_req):
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return Reply(200, [])

    with serve(handler) as server:
        async with httpx.AsyncClient() as client:
            poller = Poller(client, HostLimiter(2))
            await asyncio.gather(
                *(
                    poller.fetch(f"s{i}", server.url(f"/{i}"), timeout_s=10, max_bytes=100, now=NOW)
                    for i in range(6)
                )
            )
    assert len(server.requests) == 6
    assert in_flight[1] == 2
