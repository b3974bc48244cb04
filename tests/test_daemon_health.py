"""The daemon's own health: /healthz and the systemd watchdog follow the store's writability."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import timedelta

import httpx

from bridge.daemon import Daemon
from bridge.errors import StoreError
from bridge.store.sqlite import SQLiteStore
from bridge.systemd import Notifier
from tests.support.configs import idle_source
from tests.support.daemon import run_cli
from tests.support.notify import notify_socket
from tests.support.pipelines import make_config


class BreakableStore:
    """The real SQLite store whose writes of the runtime status fail on demand."""

    def __init__(self, inner: SQLiteStore):
        self.inner = inner
        self.broken = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def write_runtime(self, status):
        if self.broken:
            raise StoreError("write_runtime", "disk I/O error", location=self.inner.location)
        await self.inner.write_runtime(status)


@dataclass
class _Reply:
    status: int
    body: bytes


async def _get(daemon: Daemon, path: str) -> _Reply:
    """GET ``path`` from the daemon's HTTP port."""
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"{daemon.endpoint.url}{path}")
    return _Reply(reply.status_code, reply.content)


async def _wait(predicate, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_healthz_and_watchdog_follow_store_health(tmp_path):
    """While the store takes writes: /healthz 200 and WATCHDOG=1 pings; when writes fail: 503
    naming the store and no pings; when they work again: healthy again."""
    config = make_config(tmp_path, idle_source(), http="127.0.0.1:0")
    store = BreakableStore(SQLiteStore(config.state_location))
    with notify_socket() as ns:
        notifier = Notifier({"NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": "100000"})
        daemon = Daemon(config, store=store, notifier=notifier)  # type: ignore[arg-type]
        daemon.heartbeat.control_check_s = daemon.heartbeat.runtime_write_s = 0.05
        daemon.health.store_healthy_s = 0.5
        run = asyncio.create_task(daemon.run())
        try:
            ready = await asyncio.to_thread(ns.wait_for, lambda m: m.get("READY") == "1")
            await asyncio.to_thread(ns.wait_for, lambda m: "WATCHDOG" in m, after=ready)
            retention = daemon.schedule.scheduler.get_job("retention")
            assert retention.trigger.interval == timedelta(days=1)
            ok = await _get(daemon, "/healthz")
            assert ok.status == 200 and json.loads(ok.body)["status"] == "ok"

            store.broken = True
            await _wait(lambda: daemon.health.problems())
            bad = await _get(daemon, "/healthz")
            doc = json.loads(bad.body)
            assert bad.status == 503 and doc["status"] == "unhealthy"
            assert doc["store"]["writable"] is False and "disk I/O error" in doc["store"]["error"]
            await asyncio.sleep(0.3)  # let a ping that was already on its way arrive
            quiet_from = len(ns.messages)
            await asyncio.sleep(0.5)
            assert not any("WATCHDOG" in m for m in ns.messages[quiet_from:])

            store.broken = False
            await _wait(lambda: not daemon.health.problems())
            await asyncio.to_thread(ns.wait_for, lambda m: "WATCHDOG" in m, after=quiet_from)
            assert (await _get(daemon, "/healthz")).status == 200
        finally:
            daemon.request_stop()
            assert await run == 0


async def test_healthz_is_503_before_the_scheduler_runs(tmp_path):
    """A daemon that has not started its scheduler is not healthy."""
    config = make_config(tmp_path, idle_source(), http="127.0.0.1:0")
    daemon = Daemon(config)
    await daemon.endpoint.start(config)  # the HTTP port alone: no store, no scheduler
    try:
        reply = await _get(daemon, "/healthz")
        assert reply.status == 503
        assert "the scheduler is not running" in json.loads(reply.body)["problems"]
        assert (await _get(daemon, "/other")).status == 404
    finally:
        await daemon.endpoint.close()


async def test_a_delivery_loop_that_ends_makes_the_daemon_unhealthy(tmp_path, monkeypatch):
    """If the dispatcher task ends anyway: /healthz 503 naming it, no more watchdog pings (so
    systemd restarts the unit), and the runtime status that ``status`` shows says so."""
    from bridge.dispatcher import Dispatcher

    async def dies(self: Dispatcher) -> None:
        raise RuntimeError("injected: the loop died")

    monkeypatch.setattr(Dispatcher, "run", dies)
    config = make_config(tmp_path, idle_source(), http="127.0.0.1:0")
    with notify_socket() as ns:
        notifier = Notifier({"NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": "100000"})
        daemon = Daemon(config, notifier=notifier)
        daemon.heartbeat.control_check_s = daemon.heartbeat.runtime_write_s = 0.05
        run = asyncio.create_task(daemon.run())
        try:
            await asyncio.to_thread(ns.wait_for, lambda m: m.get("READY") == "1")
            await _wait(lambda: daemon.health.problems())
            reply = await _get(daemon, "/healthz")
            doc = json.loads(reply.body)
            assert reply.status == 503
            assert any("the delivery loop stopped" in p for p in doc["problems"])
            await asyncio.sleep(0.3)
            quiet_from = len(ns.messages)
            await asyncio.sleep(0.4)
            assert not any("WATCHDOG" in m for m in ns.messages[quiet_from:])
            await asyncio.sleep(0.2)  # a heartbeat writes the runtime status
            runtime = await daemon.store.read_runtime()
            assert runtime is not None
            assert any("the delivery loop stopped" in p for p in runtime["problems"])
            metrics, _ = daemon.metrics.render()
            assert b'pollbridge_internal_errors_total{component="dispatcher"} 1.0' in metrics
            shown = await asyncio.to_thread(
                run_cli, "status", "--state-file", str(config.state_location)
            )
            assert "health:  UNHEALTHY: the delivery loop stopped" in shown.stdout, shown
        finally:
            daemon.request_stop()
            assert await run == 1  # stopped, but the exit code says it was broken
