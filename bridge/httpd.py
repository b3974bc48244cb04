"""A tiny HTTP/1.1 server in the daemon's event loop, for ``/metrics`` and ``/healthz``.

Deliberately small: GET and HEAD only, one request per connection, a bounded request head and
a read timeout, so a slow or hostile client costs nothing but its own socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

log = logging.getLogger("pollbridge.http")

MAX_HEAD_BYTES = 16 * 1024
READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[str, Mapping[str, str]], Awaitable[Response]]
"""(path, lower-cased request headers) -> response."""


class StatusServer:
    """Serves ``handler`` on ``host:port`` until :meth:`close`."""

    def __init__(self, host: str, port: int, handler: Handler):
        self.host = host
        self.port = port
        self.handler = handler
        self._server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and start serving; return the bound (host, port) (``port`` 0 picks one)."""
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, limit=MAX_HEAD_BYTES, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])
        return str(sockname[0]), self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response, head_only = await self._respond(reader)
            await _write(writer, response, head_only)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("status server: unexpected error while answering a request")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.LimitOverrunError, ValueError):
            return _plain(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE), False
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _plain(HTTPStatus.BAD_REQUEST), False
        method, target, _version = parts
        if method not in ("GET", "HEAD"):
            return _plain(HTTPStatus.METHOD_NOT_ALLOWED, {"allow": "GET, HEAD"}), False
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        return await self.handler(path, headers), method == "HEAD"


def _plain(status: HTTPStatus, headers: Mapping[str, str] | None = None) -> Response:
    return Response(int(status), f"{status.phrase}\n".encode(), headers=headers or {})


async def _write(writer: asyncio.StreamWriter, response: Response, head_only: bool) -> None:
    reason = HTTPStatus(response.status).phrase
    head = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{k}: {v}" for k, v in response.headers.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(response.body)
    async with asyncio.timeout(READ_TIMEOUT_S):
        await writer.drain()
