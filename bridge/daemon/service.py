"""The daemon's life: start, run its tasks, reload, stop cleanly.

Its parts live beside it: the schedule (``schedule.py``), the heartbeat (``heartbeat.py``),
health (``health.py``), the HTTP endpoint (``endpoint.py``), what a reload changes
(``reload.py``) and the runtime status it publishes (``status.py``). The services it runs
(clients, pipeline, dispatcher) are built by :mod:`bridge.runtime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from bridge.config import Config, ListenerConfig, SourceConfig, load_config
from bridge.console.actions import DaemonActions
from bridge.console.app import Console
from bridge.console.history import PollHistory
from bridge.daemon.endpoint import Endpoint
from bridge.daemon.health import Health
from bridge.daemon.heartbeat import Heartbeat
from bridge.daemon.lock import claim_sqlite_state, release_sqlite_state
from bridge.daemon.polling import RunStats, report_poll
from bridge.daemon.reload import ConfigDiff
from bridge.daemon.report import (
    health_document,
    refresh_listener_gauges,
    runtime_status,
    status_line,
)
from bridge.daemon.retention import prune_history
from bridge.daemon.schedule import Schedule, source_period_s
from bridge.daemon.status import RuntimeStatus
from bridge.dispatcher import Dispatcher
from bridge.errors import BridgeError, ConfigError, StoreError
from bridge.leases import LeaseKeeper, this_instance
from bridge.metrics import Metrics
from bridge.models import AttemptResult, Delivery, Event
from bridge.outcome import PollOutcome
from bridge.pipeline import Pipeline
from bridge.runtime import Hooks, Services, utcnow
from bridge.store import Store, create_store
from bridge.systemd import Notifier

log = logging.getLogger("pollbridge.daemon")

EXIT_OK = 0
EXIT_POLL_FAILED = 1
EXIT_FAILED = 1  # a vital task (the delivery loop, the heartbeat...) ended before the stop
EXIT_STATE_LOST = 74  # EX_IOERR: the state file was deleted or replaced under the daemon
EXIT_PENDING = 75  # EX_TEMPFAIL: deliveries are still waiting for a retry


class Daemon:
    """Owns the store, the services, the schedule and the daemon's own tasks.

    It stays one class because start, stop and reload must see every part at once; the parts
    themselves (schedule, heartbeat, health, endpoint) are their own classes.
    """

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
        self._redactor = config.redactor
        """Every secret of every configuration this daemon has run (a reload only adds)."""
        self._stop = asyncio.Event()
        self._polls: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        self._started_at = self.clock()
        self._started_mono = time.monotonic()
        self._last_reload: dict[str, Any] | None = None
        self._status_line = ""
        self._state_lock: int | None = None
        self._state_location = config.state_location
        """The state this daemon opened; a reload cannot move it."""
        self.services: Services | None = None
        self.pipeline: Pipeline | None = None
        self.dispatcher: Dispatcher | None = None
        self.schedule = Schedule(self.poll_source, self.prune_history)
        self.health = Health(stopping=self._stop.is_set, on_task_died=self.metrics.internal_error)
        self.health.scheduler_running = lambda: self.schedule.running
        self.heartbeat = Heartbeat(
            self.store,
            self.health,
            status=self._runtime_status,
            counted=self._update_status,
            state_lost=self._lost_state,
            on_internal_error=self.metrics.internal_error,
        )
        self.polls = PollHistory()
        console = Console(
            self.store,
            lambda: self._runtime_status().to_dict(),
            DaemonActions(self),
            lambda: self.config,
            self.redact,
            self.polls,
            self.clock,
        )
        self.endpoint = Endpoint(self.metrics, self.health_report, self._refresh_gauges, console)
        # several instances on one store: who we are and our source leases
        self.instance = this_instance(clock())
        self.leases: LeaseKeeper | None = None

    def redact(self, text: str) -> str:
        """``text`` with every secret of every configuration this daemon has run, and every URL
        password, replaced by ``***``."""
        return self._redactor.redact(text)

    # -- set-up -----------------------------------------------------------------------------

    async def _start(self) -> None:
        self._state_lock = claim_sqlite_state(self.store.location)
        try:
            await self.store.open()
        except BaseException:
            self._release_state()
            raise
        self.leases = LeaseKeeper(
            self.store,
            self.instance,
            [s.name for s in self.config.sources],
            self.config.bridge.lease.total_seconds(),
        )
        await self.leases.beat()
        self.services = Services(
            self.config,
            self.store,
            clock=self.clock,
            hooks=Hooks(
                on_commit=self._on_commit,
                on_delivery=self._on_delivery,
                on_internal_error=self.metrics.internal_error,
                redact=self.redact,
            ),
            owner=self.instance.id,
        )
        self.pipeline = self.services.pipeline
        self.dispatcher = self.heartbeat.dispatcher = self.services.dispatcher
        self.metrics.reloaded(True, self._started_at)
        now = self.clock()
        for source in self.config.sources:
            self.metrics.set_source_interval(source.name, source_period_s(source, now))
        configured = {s.name for s in self.config.sources}
        for state in await self.store.list_source_states():
            if state.last_success_at is not None:
                self.stats.last_success[state.name] = state.last_success_at
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
        if self.services is not None:
            await self.services.aclose()
        await self.store.close()
        self._release_state()

    def _release_state(self) -> None:
        release_sqlite_state(self._state_lock)
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
            self.metrics.internal_error("poll")
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
        self.health.poll_started(source.name, source.timeout.total_seconds())
        try:
            outcome = await self.pipeline.poll(source, lease_token=lease_token)
        finally:
            self.health.poll_ended(source.name)
        now = self.clock()
        report_poll(source.name, outcome, now, self.stats, self.metrics)
        self.polls.record(source.name, outcome.result, outcome.ok, now)
        return outcome

    async def _poll_if_ours(self, source: SourceConfig) -> PollOutcome | None:
        assert self.leases is not None  # noqa: S101
        async with self.leases.polling(source.name) as token:
            if token is None:
                log.info("source %s is polled by another instance; skipped", source.name)
                return None
            return await self._poll_now(source, token)

    # -- retention --------------------------------------------------------------------------

    async def prune_history(self) -> None:
        """Delete events and finished deliveries older than ``[bridge] retention``; never raises."""
        await prune_history(self.store, self.config.bridge.retention, self.clock())

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
        handlers: list[signal.Signals] = []
        # a stop may come while the start waits on the store or on leases: take it from the
        # first moment (a reload only once there is something to reload)
        _on_signals(handlers, (signal.SIGTERM, self.request_stop))
        _on_signals(handlers, (signal.SIGINT, self.request_stop))
        try:
            await self._start()
        except BaseException:
            _off_signals(handlers)
            raise
        assert self.dispatcher is not None and self.leases is not None  # noqa: S101
        dispatch = asyncio.create_task(self.dispatcher.run(), name="dispatcher")
        self.health.watch("the delivery loop", dispatch)
        self.health.watch("the lease keeper", self._spawn(self.leases.run(), "leases"))
        self._spawn(self.store.watch_deliveries(self.dispatcher.wake), "listen")
        try:
            await self.endpoint.start(self.config)
            self.schedule.start(self.config.sources, self.clock())
            await self.heartbeat.beat(force_write=True)
            _on_signals(handlers, (signal.SIGHUP, self.request_reload))
            self.health.watch("the heartbeat", self._spawn(self.heartbeat.run(), "heartbeat"))
            if self.notifier.watchdog_interval_s is not None:
                self._spawn(self._watchdog_loop(self.notifier.watchdog_interval_s), "watchdog")
            log.info(
                "pollbridge running: %d source(s), %d listener(s), state %s",
                len(self.config.sources),
                len(self.config.listeners),
                self.redact(self.config.state_location),
            )
            self._status_line = self._summary(None)
            self.notifier.ready(self._status_line)
            await self._stop.wait()
            await self._shutdown(dispatch)
        finally:
            _off_signals(handlers)
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            if not dispatch.done():
                dispatch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatch
            await self.endpoint.close()
            self.schedule.shutdown()
            with contextlib.suppress(BridgeError, TimeoutError):
                async with asyncio.timeout(5):
                    await self.store.write_runtime(self._runtime_status(stopped=True).to_dict())
            await self._close()
            self.notifier.close()
        if self.health.state_lost is not None:
            return EXIT_STATE_LOST
        return EXIT_FAILED if self.health.died else EXIT_OK

    async def _shutdown(self, dispatch: asyncio.Task[None]) -> None:
        grace_s = self.config.bridge.shutdown_grace.total_seconds()
        deadline = asyncio.get_running_loop().time() + grace_s
        self.schedule.pause()
        if self._polls:
            _done, pending = await asyncio.wait(list(self._polls), timeout=grace_s)
            for t in pending:
                t.cancel()
        assert self.dispatcher is not None  # noqa: S101
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        await self.dispatcher.stop(remaining)
        # a loop that died has been logged and reported already (Health.watch)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(dispatch, timeout=1.0)
        self.schedule.shutdown()
        log.info("stopped")

    async def run_once(self) -> int:
        """Poll every source once, deliver what is due, exit (0, 1 = a poll failed, 75 = pending)."""
        await self._start()
        try:
            assert self.pipeline is not None and self.dispatcher is not None  # noqa: S101
            due = [s for s in self.config.sources if not await self._postponed(s, logging.INFO)]
            polled = await asyncio.gather(*(self._poll_if_ours(s) for s in due))
            outcomes = [o for o in polled if o is not None]
            await self.dispatcher.run_until_idle()
            pending = await self.store.pending_count([lst.name for lst in self.config.listeners])
        finally:
            await self._close()
        if any(not o.ok for o in outcomes):
            return EXIT_POLL_FAILED
        if self._internal_errors():
            log.error(
                "%d unexpected internal error(s) during this run (see the tracebacks above)",
                self._internal_errors(),
            )
            return EXIT_FAILED
        if pending:
            log.warning("%d delivery(ies) still pending (retries scheduled)", pending)
            return EXIT_PENDING
        return EXIT_OK

    # -- health and status ------------------------------------------------------------------

    def _lost_state(self, problem: str) -> None:
        """Stop, loudly, when the state file was deleted or replaced: every poll and delivery
        would go on being recorded where nobody can see it, and be lost at the next start."""
        self.health.state_lost = problem
        log.critical(
            "%s (%s): stopping now, so that nothing more is recorded in a file nobody can see. "
            "Restore the file from a backup (docs/deployment.md) or start afresh; pending "
            "deliveries recorded only in the lost file cannot be recovered by pollbridge",
            problem,
            self.redact(self._state_location),
        )
        self.request_stop()

    def _update_status(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        line = self._summary(counts)
        if line != self._status_line:
            self._status_line = line
            self.notifier.status(line)

    def _summary(self, counts: Mapping[str, Mapping[str, int]] | None) -> str:
        return status_line(self.config, self.stats, self.dispatcher, counts, self._last_reload)

    async def _watchdog_loop(self, interval_s: float) -> None:
        while True:
            problems = self.health.problems()
            if not problems:
                self.notifier.watchdog()
            else:
                log.warning("not pinging the systemd watchdog: %s", "; ".join(problems))
            await asyncio.sleep(interval_s)

    def _runtime_status(self, *, stopped: bool = False) -> RuntimeStatus:
        return runtime_status(
            self.config,
            self.schedule,
            self.dispatcher,
            now=self.clock(),
            started_at=self._started_at,
            stopped=stopped,
            http=self.endpoint.url,
            last_reload=self._last_reload,
            problems=self.health.problems(),
            internal_errors=self._internal_errors(),
        )

    def _internal_errors(self) -> int:
        """Unexpected errors caught since start, in every component."""
        return int(
            sum(
                sample.value
                for metric in self.metrics.internal_errors.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
        )

    async def _refresh_gauges(self) -> None:
        await refresh_listener_gauges(self.metrics, self.store, self.config, self.dispatcher)

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        """The ``/healthz`` document (see :func:`bridge.daemon.report.health_document`)."""
        return health_document(
            self.config,
            self.health,
            self.stats,
            self.dispatcher,
            now=self.clock(),
            started_at=self._started_at,
            uptime_s=time.monotonic() - self._started_mono,
            scheduler_running=self.schedule.running,
        )

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
                self._reloaded(False, message)
                self.notifier.ready(f"reload failed (previous configuration kept): {message}")
                await self.heartbeat.beat(force_write=True)
                return False
            try:
                summary = await self._apply(new)
            except Exception as exc:
                log.exception("reload: applying the new configuration failed")
                self._reloaded(False, str(exc))
                self.notifier.ready(f"reload failed: {exc}")
                return False
            self._reloaded(True, None)
            log.info("configuration reloaded: %s", summary)
            self._status_line = self._summary(None)
            self.notifier.ready(self._status_line)
            await self.heartbeat.beat(force_write=True)  # publish the new sources and listeners
            return True

    def _reloaded(self, ok: bool, error: str | None) -> None:
        at = self.clock()
        self._last_reload = {"at": at.isoformat(), "ok": ok, "error": error}
        self.metrics.reloaded(ok, at)

    async def _apply(self, new: Config) -> str:
        old = self.config
        self._redactor = self._redactor.with_secrets(new.sensitive_values)
        diff = ConfigDiff.of(old, new)
        if new.state_location != self._state_location:
            log.warning(
                "[bridge] state changed: still using %s until the next restart",
                self.redact(self._state_location),
            )
        self.config = new
        assert self.services is not None  # noqa: S101
        self.services.reconfigure(new)
        if self.leases is not None:
            self.leases.set_sources([s.name for s in new.sources])
        now = self.clock()
        old_sources = {s.name: s for s in old.sources}
        for name in diff.sources.removed:
            self.schedule.remove(name)
            self.metrics.forget_source(name)
            self.stats.forget(name)
        for source in new.sources:
            if source.name in diff.sources.added:
                self.schedule.add(source, now)
            elif source.name in diff.sources.changed:
                self.schedule.reschedule(old_sources[source.name], source, now)
            self.metrics.set_source_interval(source.name, source_period_s(source, now))
        for name in diff.listeners.removed:
            self.metrics.forget_listener(name)
        await self._apply_bridge(old, new)
        return diff.text()

    async def _apply_bridge(self, old: Config, new: Config) -> None:
        ob, nb = old.bridge, new.bridge
        if ob.lease != nb.lease:
            log.warning("[bridge] lease changed: applies after a restart")
        if (ob.log_level, ob.log_format) != (nb.log_level, nb.log_format):
            from bridge.logs import configure_logging

            configure_logging(self.log_level_override or nb.log_level, self.redact, nb.log_format)
        if ob.http != nb.http:
            await self.endpoint.restart(new)


def _on_signals(
    handlers: list[signal.Signals], *pairs: tuple[signal.Signals, Callable[[], None]]
) -> None:
    """Handle each signal in the running loop; remember it in ``handlers``."""
    loop = asyncio.get_running_loop()
    for sig, handler in pairs:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)
            handlers.append(sig)


def _off_signals(handlers: list[signal.Signals]) -> None:
    loop = asyncio.get_running_loop()
    for sig in handlers:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
    handlers.clear()
