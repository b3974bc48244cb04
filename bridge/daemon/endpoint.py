"""The daemon's HTTP endpoint (``[bridge] http``): ``/metrics``, ``/healthz`` and the console
(``/ui/``, :mod:`bridge.console`), one aiohttp application (:mod:`bridge.httpd`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.config import Config
from bridge.config.risks import exposure_warning
from bridge.console.app import Console
from bridge.errors import ConfigError
from bridge.httpd import HttpServer, create_app
from bridge.metrics import Metrics

log = logging.getLogger("pollbridge.daemon")


def address_url(address: tuple[str, int]) -> str:
    host, port = address
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Endpoint:
    """Serves the metrics, the health document and the console while the daemon runs."""

    def __init__(
        self,
        metrics: Metrics,
        health_report: Callable[[], tuple[bool, dict[str, Any]]],
        refresh_gauges: Callable[[], Awaitable[None]],
        console: Console | None = None,
    ) -> None:
        self.metrics = metrics
        self.health_report = health_report
        self.refresh_gauges = refresh_gauges
        self.console = console
        self.address: tuple[str, int] | None = None
        self._server: HttpServer | None = None

    @property
    def url(self) -> str | None:
        return None if self.address is None else address_url(self.address)

    async def start(self, config: Config) -> None:
        """Listen on ``[bridge] http`` (nothing when it is not set)."""
        address = config.bridge.http_address
        if address is None:
            return
        exposed = exposure_warning(address, config.bridge.http_token)
        if exposed:
            log.warning("[bridge] http %s", exposed)
        app = create_app(
            metrics=self.render_metrics,
            health=self.health_report,
            console=self.console,
            on_internal_error=lambda: self.metrics.internal_error("http"),
        )
        server = HttpServer(address[0], address[1], app)
        try:
            self.address = await server.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve /metrics and /healthz on {config.bridge.http}: {exc.strerror or exc}",
                file=config.files[0] if config.files else None,
                where="[bridge] http",
            ) from exc
        self._server = server
        base = address_url(self.address)
        log.info(
            "serving /metrics and /healthz on %s and the console on %s/ui/",
            base,
            base,
            extra={"http": True},
        )

    async def close(self) -> None:
        server, self._server, self.address = self._server, None, None
        if server is not None:
            await server.close()

    async def restart(self, config: Config) -> None:
        """``[bridge] http`` changed in a reload: move to the new address (or stop)."""
        await self.close()
        try:
            await self.start(config)
        except ConfigError as exc:
            log.error("%s; /metrics and /healthz are off until this is fixed", exc)

    async def render_metrics(self, accept: str) -> tuple[bytes, str]:
        """The ``/metrics`` body for a scraper's ``Accept`` header, and its content type."""
        await self.refresh_gauges()
        # rendering hundreds of series takes a while: keep it off the event loop
        return await asyncio.to_thread(self.metrics.render, accept)
