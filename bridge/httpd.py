"""The daemon's HTTP port (``[bridge] http``): ``/metrics``, ``/healthz`` and the console.

One aiohttp application in the daemon's event loop. Request heads are bounded by aiohttp
(8 KiB lines, 32 KiB fields), bodies to ``MAX_BODY_BYTES`` (the console's forms are tiny),
and idle connections closed; every answer carries the console's security headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from bridge.console.app import Console, add_console
from bridge.console.security import SECURITY_HEADERS
from bridge.errors import StoreError

log = logging.getLogger("pollbridge.http")

MAX_BODY_BYTES = 64 * 1024
KEEPALIVE_TIMEOUT_S = 10.0
"""An idle connection, or one whose request head is still incomplete, is closed after this."""
SHUTDOWN_TIMEOUT_S = 2.0

MetricsRenderer = Callable[[str], Awaitable[tuple[bytes, str]]]
"""Accept header -> (body, content type) of ``/metrics``."""
HealthReport = Callable[[], tuple[bool, Mapping[str, Any]]]
"""-> (healthy, the ``/healthz`` document)."""


class _ClientErrors(logging.Logger):
    """aiohttp's log of requests it could not parse: the client's problem, not ours, and a
    hostile client must not fill the journal with tracebacks. Logged at debug level."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs["exc_info"] = False
        self.debug(msg, *args, **kwargs)


_client_errors = _ClientErrors("pollbridge.http.client")
_client_errors.parent = log


def _guard(on_internal_error: Callable[[], None]) -> Middleware:
    """The middleware of every answer: security headers, a store error answered 503, and an
    unexpected error logged with its traceback, counted and answered 500."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _secure(exc.headers)
            raise  # aiohttp answers it (returning one is deprecated)
        except StoreError as exc:
            log.warning("http: %s %s: %s", request.method, request.path, exc)
            response = web.Response(
                status=503, text="the state store is not answering: see the log\n"
            )
        except Exception:
            on_internal_error()
            log.exception("http: unexpected error answering %s %s", request.method, request.path)
            response = web.Response(status=500, text="internal error: see the daemon's log\n")
        _secure(response.headers)
        return response

    return guard


def _secure(headers: MutableMapping[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)


def create_app(
    *,
    metrics: MetricsRenderer,
    health: HealthReport,
    console: Console | None = None,
    on_internal_error: Callable[[], None] = lambda: None,
) -> web.Application:
    """The application of the HTTP port; the console under ``/ui/`` when ``console`` is given;
    ``on_internal_error`` counts the unexpected errors (answered 500, logged)."""
    app = web.Application(middlewares=[_guard(on_internal_error)], client_max_size=MAX_BODY_BYTES)

    async def serve_metrics(request: web.Request) -> web.Response:
        body, content_type = await metrics(request.headers.get("Accept", ""))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def serve_health(_request: web.Request) -> web.Response:
        healthy, doc = health()
        return web.Response(
            body=orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n",
            status=200 if healthy else 503,
            content_type="application/json",
        )

    async def root(_request: web.Request) -> web.Response:
        more = ", /ui/ (the console)" if console is not None else ""
        return web.Response(text=f"pollbridge: see /metrics and /healthz{more}\n")

    async def not_found(_request: web.Request) -> web.Response:
        return web.Response(status=404, text="not found: try /metrics, /healthz or /ui/\n")

    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/healthz", serve_health)
    app.router.add_get("/", root)
    if console is not None:
        add_console(app, console)
    app.router.add_route("GET", "/{tail:.*}", not_found)
    return app


class HttpServer:
    """Serves ``app`` on ``host:port`` until :meth:`close`."""

    def __init__(self, host: str, port: int, app: web.Application):
        self.host = host
        self.port = port
        self.app = app
        self._runner: web.AppRunner | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and start serving; return the bound (host, port) (``port`` 0 picks one)."""
        runner = web.AppRunner(
            self.app,
            access_log=None,
            logger=_client_errors,
            handle_signals=False,
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if runner.addresses:
            sockname = runner.addresses[0]
            self.host, self.port = str(sockname[0]), int(sockname[1])
        return self.host, self.port

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SHUTDOWN_TIMEOUT_S + 1):
                    await runner.cleanup()
