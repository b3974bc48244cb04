"""The services a configuration needs, built once: HTTP clients, the host limiter, the poller,
the pipeline, the sender and the dispatcher.

The daemon and the CLI (``pollbridge poll``) both build them here, and a reload changes them
only through :meth:`Services.reconfigure`, so no other module reaches into another's parts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from bridge.analysis_pool import AnalysisPool
from bridge.config import Config, ListenerConfig
from bridge.dispatcher import Dispatcher
from bridge.http.connections import ClientPool
from bridge.http.poller import HostLimiter, Poller
from bridge.http.sender import Sender
from bridge.models import AttemptResult, Delivery, Event
from bridge.pipeline import Pipeline
from bridge.store import Store

log = logging.getLogger("pollbridge.daemon")

POLL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def utcnow() -> datetime:
    """The wall clock every shell uses unless a test passes its own."""
    return datetime.now(UTC)


@dataclass
class Hooks:
    """What the services tell their owner (the daemon); every hook is optional."""

    on_commit: Callable[[list[Event]], None] | None = None
    on_delivery: Callable[[ListenerConfig, Delivery, AttemptResult, str], None] | None = None
    on_internal_error: Callable[[str], None] | None = None
    redact: Callable[[str], str] = str


def build_sender(config: Config, *, max_connections: int) -> tuple[Sender, ClientPool]:
    """The listeners' sender (their TLS settings, the private-target rule) and its pool."""
    clients = ClientPool(
        httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        deny_private_targets=config.bridge.deny_private_targets,
    )
    return Sender(clients.get(), clients.for_endpoints(config.listeners, "listener")), clients


class Services:
    """The HTTP stack, the pipeline and (for a daemon) the dispatcher over one store."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        clock: Callable[[], datetime] = utcnow,
        hooks: Hooks | None = None,
        deliver: bool = True,
        owner: str = "local",
    ) -> None:
        hooks = hooks or Hooks()
        self.config = config
        self.poll_clients = ClientPool(POLL_LIMITS)
        self.hosts = HostLimiter(config.bridge.per_host_concurrency, config.min_intervals_s())
        self.poller = Poller(
            self.poll_clients.get(),
            self.hosts,
            clients=self.poll_clients.for_endpoints(config.sources, "source"),
        )
        self.analysis = AnalysisPool(
            config.bridge.analysis_workers, min_bytes=config.bridge.analysis_worker_min_bytes
        )
        self.pipeline = Pipeline(
            config,
            store,
            self.poller,
            clock=clock,
            on_commit=hooks.on_commit,
            analysis=self.analysis,
        )
        self.send_clients: ClientPool | None = None
        self.dispatcher: Dispatcher | None = None
        if deliver:
            in_flight = sum(lst.max_in_flight for lst in config.listeners) or 1
            sender, self.send_clients = build_sender(config, max_connections=in_flight)
            self.dispatcher = Dispatcher(
                store,
                sender,
                list(config.listeners),
                clock=clock,
                ignore_paths={s.name: s.ignore_paths for s in config.sources},
                on_result=hooks.on_delivery,
                on_internal_error=hooks.on_internal_error,
                redact=hooks.redact,
                owner=owner,
                lease_s=config.bridge.lease.total_seconds(),
            )

    def reconfigure(self, new: Config) -> None:
        """Take a reloaded configuration: the only way a reload changes the services."""
        old = self.config
        self.config = new
        self.pipeline.reconfigure(new)
        self.analysis.resize(new.bridge.analysis_workers, new.bridge.analysis_worker_min_bytes)
        self.poller.clients = self.poll_clients.for_endpoints(new.sources, "source")
        # [[hosts]] gaps apply at once; per_host_concurrency sizes semaphores: restart
        self.hosts.min_interval_s = {k.lower(): v for k, v in new.min_intervals_s().items()}
        if new.bridge.per_host_concurrency != old.bridge.per_host_concurrency:
            log.warning("[bridge] per_host_concurrency changed: applies after a restart")
        if self.dispatcher is not None and self.send_clients is not None:
            self.dispatcher.set_listeners(
                list(new.listeners), ignore_paths={s.name: s.ignore_paths for s in new.sources}
            )
            self.dispatcher.sender.clients = self.send_clients.for_endpoints(
                new.listeners, "listener"
            )
        if new.bridge.deny_private_targets != old.bridge.deny_private_targets:
            log.warning("[bridge] deny_private_targets changed: applies after a restart")

    async def aclose(self) -> None:
        """Close every HTTP connection the services opened and stop the analysis workers."""
        await self.analysis.aclose()
        for pool in (self.poll_clients, self.send_clients):
            if pool is not None:
                await pool.aclose()
