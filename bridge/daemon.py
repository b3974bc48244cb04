"""``pollbridge run``: schedule every source, deliver every change, stop cleanly.

Around the pipeline and the dispatcher the daemon keeps itself observable and controllable:
a heartbeat that writes its runtime status to the store (proving the store writable) and
notices operator actions (``pollbridge resume`` / ``replay``) within seconds, systemd's
notify protocol and watchdog, ``/metrics`` and ``/healthz``, SIGHUP reloads, and retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bridge import __version__
from bridge.config import Config, ListenerConfig, SourceConfig, load_config
from bridge.core.durations import format_duration
from bridge.dispatcher import Dispatcher
from bridge.errors import BridgeError, ConfigError, StoreError
from bridge.httpd import Response, StatusServer
from bridge.leases import LeaseKeeper, this_instance
from bridge.metrics import Metrics
from bridge.models import AttemptResult, Delivery, Event
from bridge.pipeline import Pipeline, PollOutcome, describe_outcome
from bridge.poller import HostLimiter, Poller
from bridge.sender import Sender
from bridge.store import Store, create_store
from bridge.store import claim_state_lock as claim_sqlite_state
from bridge.systemd import Notifier
from bridge.transport import ClientPool

log = logging.getLogger("pollbridge.daemon")

EXIT_OK = 0
EXIT_POLL_FAILED = 1
EXIT_PENDING = 75  # EX_TEMPFAIL: deliveries are still waiting for a retry

CONTROL_CHECK_S = 2.0
"""How often the daemon looks for operator actions (resume, replay) in the store."""
RUNTIME_WRITE_S = 5.0
"""How often the runtime status is written (the store's liveness proof)."""
STORE_HEALTHY_S = 30.0
"""The store counts as healthy while its last successful write is at most this old."""
STORE_CALL_TIMEOUT_S = 20.0
RETENTION_EVERY = timedelta(days=1)
RETENTION_FIRST_AFTER = timedelta(minutes=10)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunStats:
    polls_failed: int = 0
    polls_ok: int = 0
    last_outcomes: dict[str, PollOutcome] = field(default_factory=dict)


def build_trigger(source: SourceConfig) -> IntervalTrigger | CronTrigger:
    """An on-grid trigger; jitter is applied inside the job so the grid never drifts."""
    if source.cron is not None:
        return CronTrigger.from_crontab(source.cron, timezone="UTC")
    assert source.every is not None  # noqa: S101 - validated by the config
    return IntervalTrigger(seconds=source.every.total_seconds(), timezone="UTC")


def source_period_s(source: SourceConfig, now: datetime) -> float:
    """The time between two polls of ``source`` (for a cron source, around ``now``)."""
    if source.interval_s is not None:
        return source.interval_s
    trigger = build_trigger(source)
    first = trigger.get_next_fire_time(None, now)
    second = None if first is None else trigger.get_next_fire_time(first, first)
    if first is None or second is None:
        return 86400.0
    return float((second - first).total_seconds())


def stale_after_s(source: SourceConfig, now: datetime) -> float:
    """A source with no successful poll for this long is reported stale by ``/healthz``."""
    period = source_period_s(source, now)
    return max(3 * period, period + 60)


def _schedule_text(source: SourceConfig) -> str:
    return f"every {format_duration(source.every)}" if source.every else f"cron {source.cron}"


def _schedule_key(source: SourceConfig) -> tuple[Any, ...]:
    return (source.every, source.cron)


class Daemon:
    """Owns the store, the HTTP clients, the scheduler, the pipeline and the dispatcher."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] = utcnow,
        store: Store | None = None,
        notifier: Notifier | None = None,
        log_level_override: str | None = None,
    ):
        self.config = config
        self.clock = clock
        self.store = store or create_store(config.state_location)
        self.stats = RunStats()
        self.metrics = Metrics()
        self.notifier = notifier or Notifier()
        self.rng = random.Random()  # noqa: S311 - jitter, not security
        self.log_level_override = log_level_override
        self.http_address: tuple[str, int] | None = None
        self._sensitive: set[str] = set(config.sensitive_values)
        self._stop = asyncio.Event()
        self._polls: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._poll_clients: ClientPool | None = None
        self._hosts: HostLimiter | None = None
        self._send_clients: ClientPool | None = None
        self._http: StatusServer | None = None
        self._reload_lock = asyncio.Lock()
        self._started_at = self.clock()
        self._started_mono = time.monotonic()
        self._store_ok_at: float | None = None
        self._store_error: str | None = None
        self._last_runtime_write = 0.0
        self._control_seen: int | None = None
        self._last_success: dict[str, datetime] = {}
        self._last_reload: dict[str, Any] | None = None
        self._status_line = ""
        self.control_check_s = CONTROL_CHECK_S
        self.store_healthy_s = STORE_HEALTHY_S
        self.runtime_write_s = RUNTIME_WRITE_S
        self.scheduler: AsyncIOScheduler | None = None
        self.pipeline: Pipeline | None = None
        self.dispatcher: Dispatcher | None = None
        # several instances on one store: who we are and our source leases
        self.instance = this_instance(clock())
        self.leases: LeaseKeeper | None = None
        self._state_lock: int | None = None

    def redact(self, text: str) -> str:
        """``text`` with every secret of every configuration this daemon has run replaced."""
        for value in sorted(self._sensitive, key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    # -- set-up -----------------------------------------------------------------------------

    async def _start(self) -> None:
        self._state_lock = claim_sqlite_state(self.store.location)
        try:
            await self.store.open()
        except BaseException:
            self._release_state()
            raise
        lease_s = self.config.bridge.lease.total_seconds()
        self.leases = LeaseKeeper(
            self.store, self.instance, [s.name for s in self.config.sources], lease_s
        )
        await self.leases.beat()
        self._poll_clients = ClientPool(
            httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )
        in_flight = sum(lst.max_in_flight for lst in self.config.listeners) or 1
        self._send_clients = ClientPool(
            httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight),
            deny_private_targets=self.config.bridge.deny_private_targets,
        )
        sender = Sender(
            self._send_clients.get(),
            self._send_clients.for_endpoints(self.config.listeners, "listener"),
        )
        self._hosts = HostLimiter(
            self.config.bridge.per_host_concurrency, self.config.min_intervals_s()
        )
        self.dispatcher = Dispatcher(
            self.store,
            sender,
            list(self.config.listeners),
            clock=self.clock,
            ignore_paths={s.name: s.ignore_paths for s in self.config.sources},
            on_result=self._on_delivery,
            redact=self.redact,
            owner=self.instance.id,
            lease_s=lease_s,
        )
        self.pipeline = Pipeline(
            self.config,
            self.store,
            Poller(
                self._poll_clients.get(),
                self._hosts,
                clients=self._poll_clients.for_endpoints(self.config.sources, "source"),
            ),
            clock=self.clock,
            on_commit=self._on_commit,
        )
        configured = {s.name for s in self.config.sources}
        for state in await self.store.list_source_states():
            if state.last_success_at is not None:
                self._last_success[state.name] = state.last_success_at
            if state.name in configured:
                self.metrics.seed_source(
                    state.name, item_count=state.item_count, last_success=state.last_success_at
                )

    def _on_commit(self, events: list[Event]) -> None:
        if self.dispatcher is not None:
            self.dispatcher.events_committed()

    def _on_delivery(
        self, listener: ListenerConfig, delivery: Delivery, result: AttemptResult, state: str
    ) -> None:
        self.metrics.observe_delivery(listener.name, delivery, result, state, self.clock())

    async def _close(self) -> None:
        if self.leases is not None:
            try:
                await self.leases.leave()
            except StoreError as exc:
                log.warning("could not give up our leases (they expire on their own): %s", exc)
        for pool in (self._poll_clients, self._send_clients):
            if pool is not None:
                await pool.aclose()
        await self.store.close()
        self._release_state()

    def _release_state(self) -> None:
        if self._state_lock is not None:
            os.close(self._state_lock)  # closing the descriptor drops the flock
            self._state_lock = None

    # -- polling ----------------------------------------------------------------------------

    async def poll_source(self, name: str) -> PollOutcome | None:
        """One scheduled poll (jitter, backoff and shutdown respected); never raises."""
        task = asyncio.current_task()
        if task is not None:
            self._polls.add(task)
        try:
            if self._stop.is_set():
                return None
            source = self._source(name)
            if source is None:
                return None
            if await self._postponed(source):
                return None
            if source.jitter.total_seconds() > 0:
                await asyncio.sleep(self.rng.uniform(0, source.jitter.total_seconds()))
            assert self.leases is not None  # noqa: S101
            async with self.leases.polling(name) as token:
                if token is None:
                    return None  # another instance polls this source
                return await self._poll_now(source, token)
        except StoreError as exc:
            # locked by another process, disk full...: the transaction rolled back whole
            log.warning(
                "poll %s failed: %s; nothing was recorded, the next poll tries again",
                name,
                exc,
                extra={"source": name},
            )
            self.stats.polls_failed += 1
            return None
        except Exception:
            log.exception("poll of %s: unexpected error", name, extra={"source": name})
            self.stats.polls_failed += 1
            return None
        finally:
            if task is not None:
                self._polls.discard(task)

    async def _postponed(self, source: SourceConfig, level: int = logging.DEBUG) -> bool:
        """Whether the source is backing off or was told to wait (Retry-After): skip this run."""
        assert self.pipeline is not None  # noqa: S101
        until = await self.pipeline.postponed_until(source.name, self.clock())
        if until is not None:
            log.log(
                level,
                "poll %s skipped: postponed until %s (backoff or Retry-After)",
                source.name,
                until.isoformat(timespec="seconds"),
                extra={"source": source.name},
            )
        return until is not None

    def _source(self, name: str) -> SourceConfig | None:
        for s in self.config.sources:
            if s.name == name:
                return s
        return None

    async def _poll_now(self, source: SourceConfig, lease_token: int | None = None) -> PollOutcome:
        assert self.pipeline is not None  # noqa: S101
        outcome = await self.pipeline.poll(source, lease_token=lease_token)
        self.stats.last_outcomes[source.name] = outcome
        now = self.clock()
        self.metrics.observe_poll(
            source.name,
            ok=outcome.ok,
            result=outcome.result,
            duration_s=outcome.duration_s,
            item_count=outcome.item_count,
            change_types=[c.type for c in outcome.changes] if outcome.committed else [],
            at=now,
        )
        fields = describe_outcome(outcome)
        if outcome.ok:
            self._last_success[source.name] = now
            self.stats.polls_ok += 1
            changed = fields["created"] + fields["updated"] + fields["deleted"]
            level = logging.INFO if changed or outcome.result != "unchanged" else logging.DEBUG
            log.log(
                level,
                "poll %s: %s, %d items, %d created, %d updated, %d deleted (%.0f ms)",
                source.name,
                outcome.result,
                outcome.item_count,
                fields["created"],
                fields["updated"],
                fields["deleted"],
                outcome.duration_s * 1000,
                extra={"source": source.name},
            )
        else:
            self.stats.polls_failed += 1
            later = ""
            if outcome.not_before is not None:
                later = f"; next poll not before {outcome.not_before.isoformat(timespec='seconds')}"
            log.warning(
                "%s%s",
                outcome.error,
                later,
                extra={"source": source.name},
            )
        return outcome

    def _schedule(self) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        now = self.clock()
        for source in self.config.sources:
            self._add_job(scheduler, source, now)
        scheduler.add_job(
            self.prune_history,
            IntervalTrigger(seconds=RETENTION_EVERY.total_seconds(), timezone="UTC"),
            id="retention",
            name="retention",
            max_instances=1,
            coalesce=True,
            next_run_time=now + RETENTION_FIRST_AFTER,
        )
        scheduler.start()
        self.scheduler = scheduler

    def _add_job(self, scheduler: AsyncIOScheduler, source: SourceConfig, now: datetime) -> None:
        trigger = build_trigger(source)
        grace = int(source.interval_s or 60)
        scheduler.add_job(
            self.poll_source,
            trigger,
            args=[source.name],
            id=f"poll:{source.name}",
            name=f"poll {source.name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, grace),
            # an interval source polls at start-up; a cron source waits for its first slot
            next_run_time=now if source.cron is None else None,
            replace_existing=True,
        )

    # -- retention --------------------------------------------------------------------------

    async def prune_history(self) -> None:
        """Delete events and finished deliveries older than ``[bridge] retention``; never raises."""
        retention = self.config.bridge.retention
        if retention is None:
            return
        cutoff = self.clock() - retention
        try:
            result = await self.store.prune(cutoff)
        except StoreError as exc:
            log.error("retention: pruning failed, trying again tomorrow: %s", exc)
            return
        level = logging.INFO if result.events or result.deliveries else logging.DEBUG
        log.log(
            level,
            "retention: pruned %d event(s), %d finished delivery(ies) and %d attempt(s) "
            "older than %s",
            result.events,
            result.deliveries,
            result.attempts,
            format_duration(retention),
        )

    # -- running ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM / SIGINT)."""
        if not self._stop.is_set():
            log.info("stopping: finishing in-flight polls and deliveries")
            self.notifier.stopping("stopping: finishing in-flight polls and deliveries")
        self._stop.set()

    def request_reload(self) -> None:
        """Re-read the configuration soon (SIGHUP)."""
        self._spawn(self.reload(), "reload")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def run(self) -> int:
        """Run until stopped; return the exit code."""
        await self._start()
        loop = asyncio.get_running_loop()
        handlers: list[signal.Signals] = []
        assert self.dispatcher is not None  # noqa: S101
        dispatch = asyncio.create_task(self.dispatcher.run(), name="dispatcher")
        assert self.leases is not None  # noqa: S101
        self._spawn(self.leases.run(), "leases")
        self._spawn(self.store.watch_deliveries(self.dispatcher.wake), "listen")
        try:
            await self._start_http(self.config)
            self._schedule()
            await self._heartbeat(force_write=True)
            for sig, handler in (
                (signal.SIGTERM, self.request_stop),
                (signal.SIGINT, self.request_stop),
                (signal.SIGHUP, self.request_reload),
            ):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, handler)
                    handlers.append(sig)
            self._spawn(self._heartbeat_loop(), "heartbeat")
            if self.notifier.watchdog_interval_s is not None:
                self._spawn(self._watchdog_loop(self.notifier.watchdog_interval_s), "watchdog")
            log.info(
                "pollbridge running: %d source(s), %d listener(s), state %s",
                len(self.config.sources),
                len(self.config.listeners),
                self.config.redact(self.config.state_location),
            )
            self._status_line = self._summary(None)
            self.notifier.ready(self._status_line)
            await self._stop.wait()
            await self._shutdown(dispatch)
        finally:
            for sig in handlers:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            if not dispatch.done():
                dispatch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatch
            if self._http is not None:
                await self._http.close()
            if self.scheduler is not None and self.scheduler.running:
                self.scheduler.shutdown(wait=False)
            with contextlib.suppress(BridgeError, TimeoutError):
                async with asyncio.timeout(5):
                    await self.store.write_runtime(self._runtime_status(stopped=True))
            await self._close()
            self.notifier.close()
        return EXIT_OK

    async def _shutdown(self, dispatch: asyncio.Task[None]) -> None:
        grace_s = self.config.bridge.shutdown_grace.total_seconds()
        deadline = asyncio.get_running_loop().time() + grace_s
        if self.scheduler is not None:
            # pause first: shutdown() would cancel running coroutine jobs mid-poll
            self.scheduler.pause()
        if self._polls:
            _done, pending = await asyncio.wait(list(self._polls), timeout=grace_s)
            for t in pending:
                t.cancel()
        assert self.dispatcher is not None  # noqa: S101
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        await self.dispatcher.stop(remaining)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(dispatch, timeout=1.0)
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        log.info("stopped")

    async def _poll_if_ours(self, source: SourceConfig) -> PollOutcome | None:
        assert self.leases is not None  # noqa: S101
        async with self.leases.polling(source.name) as token:
            if token is None:
                log.info("source %s is polled by another instance; skipped", source.name)
                return None
            return await self._poll_now(source, token)

    async def run_once(self) -> int:
        """Poll every source once, deliver what is due, exit (0, 1 = a poll failed, 75 = pending)."""
        await self._start()
        try:
            assert self.pipeline is not None  # noqa: S101
            due = [s for s in self.config.sources if not await self._postponed(s, logging.INFO)]
            polled = await asyncio.gather(
                *(self._poll_if_ours(s) for s in due), return_exceptions=False
            )
            outcomes = [o for o in polled if o is not None]
            assert self.dispatcher is not None  # noqa: S101
            await self.dispatcher.run_until_idle()
            pending = await self.store.pending_count([lst.name for lst in self.config.listeners])
        finally:
            await self._close()
        if any(not o.ok for o in outcomes):
            return EXIT_POLL_FAILED
        if pending:
            log.warning("%d delivery(ies) still pending (retries scheduled)", pending)
            return EXIT_PENDING
        return EXIT_OK

    # -- heartbeat, control and watchdog ----------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.control_check_s)
            await self._heartbeat()

    async def _heartbeat(self, *, force_write: bool = False) -> None:
        """Notice operator actions; every few seconds write the runtime status. Never raises."""
        try:
            async with asyncio.timeout(STORE_CALL_TIMEOUT_S):
                version = await self.store.control_version()
                if version != self._control_seen:
                    if self._control_seen is not None and self.dispatcher is not None:
                        # our own pauses (410, disable_after) move the counter too, so this
                        # is no evidence of an operator: say what happened, quietly
                        log.debug(
                            "the state's control counter moved (a pause, resume or replay): "
                            "re-reading paused listeners and dispatching"
                        )
                        await self.dispatcher.refresh_paused(force=True)
                        self.dispatcher.wake()
                    self._control_seen = version
                if (
                    force_write
                    or time.monotonic() - self._last_runtime_write >= self.runtime_write_s
                ):
                    await self.store.write_runtime(self._runtime_status())
                    self._last_runtime_write = time.monotonic()
                    self._store_ok_at = time.monotonic()
                    counts = await self.store.delivery_counts(["pending", "dead"])
                    self._update_status(counts)
            if self._store_error is not None:
                log.info("the state store is writable again")
            self._store_error = None
        except (StoreError, TimeoutError) as exc:
            text = str(exc) or f"no answer within {STORE_CALL_TIMEOUT_S:g}s"
            if self._store_error is None:
                log.error("the state store is not healthy: %s", text)
            self._store_error = text
        except Exception:
            log.exception("heartbeat: unexpected error")

    def _update_status(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        line = self._summary(counts)
        if line != self._status_line:
            self._status_line = line
            self.notifier.status(line)

    def _summary(self, counts: Mapping[str, Mapping[str, int]] | None) -> str:
        text = f"{len(self.config.sources)} source(s), {len(self.config.listeners)} listener(s)"
        if counts is not None:
            pending = sum(c.get("pending", 0) for c in counts.values())
            dead = sum(c.get("dead", 0) for c in counts.values())
            text += f"; {pending} pending, {dead} dead"
        failing = [
            name
            for name, outcome in self.stats.last_outcomes.items()
            if not outcome.ok and self._source(name) is not None
        ]
        if failing:
            text += f"; failing: {', '.join(sorted(failing))}"
        paused = sorted(self.dispatcher.paused) if self.dispatcher is not None else []
        if paused:
            text += f"; paused: {', '.join(paused)}"
        if self._last_reload is not None and not self._last_reload["ok"]:
            text += "; last reload FAILED, previous configuration kept (see the journal)"
        return text

    async def _watchdog_loop(self, interval_s: float) -> None:
        while True:
            healthy, problems = self.health()
            if healthy:
                self.notifier.watchdog()
            else:
                log.warning("not pinging the systemd watchdog: %s", "; ".join(problems))
            await asyncio.sleep(interval_s)

    def health(self) -> tuple[bool, list[str]]:
        """(healthy, problems): the scheduler runs and the store took a write recently."""
        problems = []
        if self.scheduler is None or self.scheduler.state != STATE_RUNNING:
            problems.append("the scheduler is not running")
        if self._store_ok_at is None:
            problems.append("the state store has not been written yet")
        elif time.monotonic() - self._store_ok_at > self.store_healthy_s:
            age = time.monotonic() - self._store_ok_at
            problems.append(
                f"the state store took no write for {age:.0f}s"
                + (f" ({self._store_error})" if self._store_error else "")
            )
        return not problems, problems

    def _runtime_status(self, *, stopped: bool = False) -> dict[str, Any]:
        now = self.clock()
        scheduler = self.scheduler
        sources = {}
        for s in self.config.sources:
            job = scheduler.get_job(f"poll:{s.name}") if scheduler is not None else None
            next_at = getattr(job, "next_run_time", None) if job is not None else None
            sources[s.name] = {
                "schedule": _schedule_text(s),
                "interval_s": s.interval_s,
                "next_poll_at": None if next_at is None or stopped else next_at.isoformat(),
            }
        dispatcher = self.dispatcher
        listeners = {}
        for lst in self.config.listeners:
            listeners[lst.name] = {
                "in_flight": 0 if dispatcher is None else dispatcher.inflight_for(lst.name),
                "paused": dispatcher is not None and lst.name in dispatcher.paused,
                "state": "active" if dispatcher is None else dispatcher.listener_state(lst.name),
            }
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self._started_at.isoformat(),
            "heartbeat_at": now.isoformat(),
            "stopped_at": now.isoformat() if stopped else None,
            "config_files": list(self.config.files),
            "http": None if self.http_address is None else _url(self.http_address),
            "sources": sources,
            "listeners": listeners,
            "last_reload": self._last_reload,
        }

    # -- /metrics and /healthz --------------------------------------------------------------

    async def _start_http(self, config: Config) -> None:
        address = config.bridge.http_address
        if address is None:
            return
        server = StatusServer(address[0], address[1], self._serve)
        try:
            self.http_address = await server.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve /metrics and /healthz on {config.bridge.http}: {exc.strerror or exc}",
                file=config.files[0] if config.files else None,
                where="[bridge] http",
            ) from exc
        self._http = server
        log.info(
            "serving /metrics and /healthz on http://%s:%d",
            *self.http_address,
            extra={"http": True},
        )

    async def _serve(self, path: str, headers: Mapping[str, str]) -> Response:
        if path == "/metrics":
            await self._refresh_gauges()
            # rendering hundreds of series takes a while: keep it off the event loop
            body, content_type = await asyncio.to_thread(
                self.metrics.render, headers.get("accept", "")
            )
            return Response(200, body, content_type)
        if path == "/healthz":
            healthy, doc = self.health_report()
            return Response(
                200 if healthy else 503,
                orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n",
                "application/json",
            )
        if path == "/":
            return Response(200, b"pollbridge: see /metrics and /healthz\n")
        return Response(404, b"not found: try /metrics or /healthz\n")

    async def _refresh_gauges(self) -> None:
        dispatcher = self.dispatcher
        try:
            async with asyncio.timeout(5):
                counts = await self.store.delivery_counts(["pending", "dead"])
        except (StoreError, TimeoutError) as exc:
            log.warning("metrics: cannot count deliveries: %s", exc)
            return
        names = [lst.name for lst in self.config.listeners]
        self.metrics.set_listener_gauges(
            names,
            counts,
            paused=dispatcher.paused if dispatcher is not None else (),
            in_flight={n: dispatcher.inflight_for(n) for n in names} if dispatcher else {},
            breaker_open=[
                n for n in names if dispatcher and dispatcher.listener_state(n) == "breaker_open"
            ],
        )

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        """The ``/healthz`` document; healthy when the scheduler runs and the store is writable.

        Per-source staleness is reported but does not make the daemon unhealthy: a failing API
        is not cured by restarting pollbridge.
        """
        healthy, problems = self.health()
        now = self.clock()
        sources = {}
        for s in self.config.sources:
            last = self._last_success.get(s.name)
            reference = last or self._started_at
            age_s = (now - reference).total_seconds()
            outcome = self.stats.last_outcomes.get(s.name)
            sources[s.name] = {
                "last_success_at": None if last is None else last.isoformat(),
                "age_s": None if last is None else round(age_s, 3),
                "stale_after_s": stale_after_s(s, now),
                "stale": age_s > stale_after_s(s, now),
                "last_result": None if outcome is None else outcome.result,
            }
        dispatcher = self.dispatcher
        listeners = {
            lst.name: {
                "state": "active" if dispatcher is None else dispatcher.listener_state(lst.name),
                "in_flight": 0 if dispatcher is None else dispatcher.inflight_for(lst.name),
            }
            for lst in self.config.listeners
        }
        store_age = None if self._store_ok_at is None else time.monotonic() - self._store_ok_at
        doc = {
            "status": "ok" if healthy else "unhealthy",
            "problems": problems,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._started_mono, 3),
            "scheduler": "running"
            if self.scheduler is not None and self.scheduler.state == STATE_RUNNING
            else "stopped",
            "store": {
                "writable": self._store_ok_at is not None
                and not any("store" in p for p in problems),
                "last_write_age_s": None if store_age is None else round(store_age, 3),
                "error": self._store_error,
            },
            "sources": sources,
            "listeners": listeners,
        }
        return healthy, doc

    # -- reload -----------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the configuration files; apply them, or keep the old ones if they are invalid."""
        async with self._reload_lock:
            self.notifier.reloading()
            files = self.config.files
            path = files[0] if files else None
            try:
                new = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                message = self.redact(str(exc))
                log.error("reload rejected; still running the previous configuration: %s", message)
                self._last_reload = {"at": self.clock().isoformat(), "ok": False, "error": message}
                self.notifier.ready(f"reload failed (previous configuration kept): {message}")
                await self._heartbeat(force_write=True)
                return False
            try:
                summary = await self._apply(new)
            except Exception as exc:
                log.exception("reload: applying the new configuration failed")
                self._last_reload = {"at": self.clock().isoformat(), "ok": False, "error": str(exc)}
                self.notifier.ready(f"reload failed: {exc}")
                return False
            self._last_reload = {"at": self.clock().isoformat(), "ok": True, "error": None}
            log.info("configuration reloaded: %s", summary)
            self._status_line = self._summary(None)
            self.notifier.ready(self._status_line)
            await self._heartbeat(force_write=True)  # publish the new sources and listeners
            return True

    async def _apply(self, new: Config) -> str:
        old = self.config
        self._sensitive |= new.sensitive_values
        old_sources = {s.name: s for s in old.sources}
        new_sources = {s.name: s for s in new.sources}
        old_listeners = {lst.name: lst for lst in old.listeners}
        new_listeners = {lst.name: lst for lst in new.listeners}
        if new.state_location != old.state_location:
            log.warning(
                "[bridge] state changed: still using %s until the next restart",
                old.redact(old.state_location),
            )
        self.config = new
        assert self.pipeline is not None and self.dispatcher is not None  # noqa: S101
        self.pipeline.reconfigure(new)
        self.dispatcher.set_listeners(
            list(new.listeners), ignore_paths={s.name: s.ignore_paths for s in new.sources}
        )
        self._refresh_clients(old, new)
        if self.leases is not None:
            self.leases.set_sources([s.name for s in new.sources])
        if self._hosts is not None:
            # [[hosts]] gaps apply at once; per_host_concurrency sizes semaphores: restart
            self._hosts.min_interval_s = {k.lower(): v for k, v in new.min_intervals_s().items()}
            if new.bridge.per_host_concurrency != old.bridge.per_host_concurrency:
                log.warning("[bridge] per_host_concurrency changed: applies after a restart")
        now = self.clock()
        scheduler = self.scheduler
        removed = sorted(set(old_sources) - set(new_sources))
        added = sorted(set(new_sources) - set(old_sources))
        changed = sorted(
            n
            for n in set(old_sources) & set(new_sources)
            if old_sources[n].model_dump() != new_sources[n].model_dump()
        )
        for name in removed:
            if scheduler is not None:
                with contextlib.suppress(JobLookupError):
                    scheduler.remove_job(f"poll:{name}")
            self.metrics.forget_source(name)
            self.stats.last_outcomes.pop(name, None)
        for name in added:
            if scheduler is not None:
                self._add_job(scheduler, new_sources[name], now)
        for name in changed:
            if scheduler is not None and _schedule_key(old_sources[name]) != _schedule_key(
                new_sources[name]
            ):
                self._add_job(scheduler, new_sources[name], now)
        for name in set(old_listeners) - set(new_listeners):
            self.metrics.forget_listener(name)
        await self._apply_bridge(old, new)
        listeners_changed = sorted(
            n
            for n in set(old_listeners) & set(new_listeners)
            if old_listeners[n].model_dump() != new_listeners[n].model_dump()
        )
        return (
            f"sources +{len(added)} -{len(removed)} ~{len(changed)}"
            f" ({_names(added, removed, changed)}); "
            f"listeners +{len(set(new_listeners) - set(old_listeners))}"
            f" -{len(set(old_listeners) - set(new_listeners))} ~{len(listeners_changed)}"
            f" ({_names(sorted(set(new_listeners) - set(old_listeners)), sorted(set(old_listeners) - set(new_listeners)), listeners_changed)})"
        )

    def _refresh_clients(self, old: Config, new: Config) -> None:
        """Give each source and listener the HTTP client of its (possibly new) TLS settings."""
        if self._poll_clients is not None and self.pipeline is not None:
            self.pipeline.poller.clients = self._poll_clients.for_endpoints(new.sources, "source")
        if self._send_clients is not None and self.dispatcher is not None:
            self.dispatcher.sender.clients = self._send_clients.for_endpoints(
                new.listeners, "listener"
            )
        if new.bridge.deny_private_targets != old.bridge.deny_private_targets:
            log.warning("[bridge] deny_private_targets changed: applies after a restart")

    async def _apply_bridge(self, old: Config, new: Config) -> None:
        ob, nb = old.bridge, new.bridge
        if ob.lease != nb.lease:
            log.warning("[bridge] lease changed: applies after a restart")
        if (ob.log_level, ob.log_format) != (nb.log_level, nb.log_format):
            from bridge.logs import configure_logging

            configure_logging(self.log_level_override or nb.log_level, self.redact, nb.log_format)
        if ob.http != nb.http:
            previous = self._http
            self._http = None
            self.http_address = None
            if previous is not None:
                await previous.close()
            try:
                await self._start_http(new)
            except ConfigError as exc:
                log.error("%s; /metrics and /healthz are off until this is fixed", exc)


def _url(address: tuple[str, int]) -> str:
    host, port = address
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _names(added: list[str], removed: list[str], changed: list[str]) -> str:
    parts = [f"+{n}" for n in added] + [f"-{n}" for n in removed] + [f"~{n}" for n in changed]
    return ", ".join(parts) or "no change"


def next_poll_time(daemon: Daemon, source: str) -> datetime | None:
    if daemon.scheduler is None:
        return None
    job = daemon.scheduler.get_job(f"poll:{source}")
    return None if job is None else job.next_run_time


__all__ = ["EXIT_OK", "EXIT_PENDING", "EXIT_POLL_FAILED", "Daemon", "next_poll_time"]
