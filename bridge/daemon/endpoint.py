"""The daemon's HTTP endpoint (``[bridge] http``): ``/metrics`` and ``/healthz``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from bridge.config import Config
from bridge.errors import ConfigError
from bridge.httpd import Response, StatusServer
from bridge.metrics import Metrics

log = logging.getLogger("pollbridge.daemon")


def address_url(address: tuple[str, int]) -> str:
    host, port = address
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Endpoint:
    """Serves the metrics and the health document while the daemon runs."""

    def __init__(
        self,
        metrics: Metrics,
        health_report: Callable[[], tuple[bool, dict[str, Any]]],
        refresh_gauges: Callable[[], Awaitable[None]],
    ) -> None:
        self.metrics = metrics
        self.health_report = health_report
        self.refresh_gauges = refresh_gauges
        self.address: tuple[str, int] | None = None
        self._server: StatusServer | None = None

    @property
    def url(self) -> str | None:
        return None if self.address is None else address_url(self.address)

    async def start(self, config: Config) -> None:
        """Listen on ``[bridge] http`` (nothing when it is not set)."""
        address = config.bridge.http_address
        if address is None:
            return
        server = StatusServer(address[0], address[1], self.serve)
        try:
            self.address = await server.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve /metrics and /healthz on {config.bridge.http}: {exc.strerror or exc}",
                file=config.files[0] if config.files else None,
                where="[bridge] http",
            ) from exc
        self._server = server
        log.info(
            "serving /metrics and /healthz on http://%s:%d",
            *self.address,
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

    async def serve(self, path: str, headers: Mapping[str, str]) -> Response:
        """Answer one request; an unexpected error is logged, counted and answered 500."""
        try:
            return await self._answer(path, headers)
        except Exception:
            self.metrics.internal_error("http")
            log.exception("http endpoint: unexpected error answering %s", path)
            return Response(500, b"internal error: see the daemon's log\n")

    async def _answer(self, path: str, headers: Mapping[str, str]) -> Response:
        if path == "/metrics":
            await self.refresh_gauges()
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
