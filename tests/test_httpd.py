"""bridge/httpd.py: the HTTP port answers /metrics and /healthz, refuses what it does not
serve, survives bad requests, and puts the security headers on every answer."""

from __future__ import annotations

import asyncio
import json

from bridge.httpd import HttpServer, create_app


async def _metrics(accept: str) -> tuple[bytes, str]:
    if "openmetrics" in accept:
        return b"# EOF\n", "application/openmetrics-text; version=1.0.0; charset=utf-8"
    return b"pollbridge_up 1\n", "text/plain; version=0.0.4; charset=utf-8"


class _Health:
    healthy = True

    def __call__(self) -> tuple[bool, dict]:
        return self.healthy, {"status": "ok" if self.healthy else "unhealthy"}


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


async def _served(health: _Health | None = None) -> tuple[HttpServer, int]:
    server = HttpServer("127.0.0.1", 0, create_app(metrics=_metrics, health=health or _Health()))
    _host, port = await server.start()
    return server, port


async def test_metrics_healthz_and_their_status_codes():
    """/metrics follows Accept; /healthz is 200 or 503 with its JSON; HEAD has no body; an
    unknown path 404s; other methods 405 with Allow; the query string is ignored."""
    health = _Health()
    server, port = await _served(health)
    close = b"Host: t\r\nConnection: close\r\n\r\n"
    try:
        text = await _exchange(port, b"GET /metrics?x=1 HTTP/1.1\r\n" + close)
        assert text.startswith(b"HTTP/1.1 200 OK\r\n") and text.endswith(b"pollbridge_up 1\n")
        assert b"Content-Type: text/plain; version=0.0.4" in text
        om = await _exchange(
            port, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n" + close
        )
        assert b"Content-Type: application/openmetrics-text" in om and om.endswith(b"# EOF\n")
        ok = await _exchange(port, b"GET /healthz HTTP/1.1\r\n" + close)
        assert ok.startswith(b"HTTP/1.1 200") and b"application/json" in ok
        assert json.loads(ok.split(b"\r\n\r\n", 1)[1]) == {"status": "ok"}
        health.healthy = False
        bad = await _exchange(port, b"GET /healthz HTTP/1.1\r\n" + close)
        assert bad.startswith(b"HTTP/1.1 503") and b'"unhealthy"' in bad
        head = await _exchange(port, b"HEAD /healthz HTTP/1.1\r\n" + close)
        assert head.startswith(b"HTTP/1.1 503") and head.endswith(b"\r\n\r\n")
        missing = await _exchange(port, b"GET /nope HTTP/1.0\r\n\r\n")
        assert missing.startswith(b"HTTP/1.0 404 Not Found")  # answered in the client's version
        post = await _exchange(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n" + close)
        assert post.startswith(b"HTTP/1.1 405") and b"Allow: GET" in post
        for reply in (text, ok, bad, missing, post):
            assert b"X-Content-Type-Options: nosniff" in reply
            assert b"frame-ancestors 'none'" in reply
            assert b"Cache-Control: no-store" in reply
    finally:
        await server.close()


async def test_bad_requests_cost_only_their_connection():
    """Junk and a huge request head are refused with 400; a client that gives up half-way
    leaves the server answering the next one."""
    server, port = await _served()
    try:
        junk = await _exchange(port, b"hello there\r\n\r\n")
        assert junk.startswith(b"HTTP/1.0 400 Bad Request")
        huge = await _exchange(
            port, b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 64 * 1024 + b"\r\n\r\n"
        )
        assert huge.startswith(b"HTTP/1.0 400")
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /hel")  # a client that gives up half-way
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        again = await _exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert again.startswith(b"HTTP/1.1 200") and b"see /metrics and /healthz" in again
    finally:
        await server.close()


async def test_a_taken_port_is_an_oserror():
    """Binding a port another server holds raises OSError (the daemon makes it a ConfigError)."""
    first, port = await _served()
    try:
        second = HttpServer("127.0.0.1", port, create_app(metrics=_metrics, health=_Health()))
        try:
            await second.start()
        except OSError:
            pass
        else:
            await second.close()
            raise AssertionError("a second server bound the same port")
    finally:
        await first.close()
