"""bridge/httpd.py: the tiny status server answers well-formed requests and survives bad ones."""

from __future__ import annotations

import asyncio

from bridge.httpd import MAX_HEAD_BYTES, Response, StatusServer


async def _handler(path: str, headers):
    if path == "/hello":
        return Response(200, f"hi {headers.get('x-name', '?')}\n".encode())
    return Response(404, b"no\n")


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


async def test_requests_and_bad_requests():
    """GET and HEAD route by path (query ignored); other methods 405; junk 400; a huge head 431."""
    server = StatusServer("127.0.0.1", 0, _handler)
    _host, port = await server.start()
    try:
        ok = await _exchange(port, b"GET /hello?x=1 HTTP/1.1\r\nX-Name: ops\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Length: 7\r\n" in ok and ok.endswith(b"\r\n\r\nhi ops\n")
        head = await _exchange(port, b"HEAD /hello HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
        missing = await _exchange(port, b"GET /nope HTTP/1.0\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404 Not Found")
        post = await _exchange(port, b"POST /hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405") and b"allow: GET, HEAD" in post
        junk = await _exchange(port, b"hello there\r\n\r\n")
        assert junk.startswith(b"HTTP/1.1 400")
        huge = await _exchange(port, b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 431")
        assert await _exchange(port, b"GET /hel") == b""  # client gave up half-way
        again = await _exchange(port, b"GET /hello HTTP/1.1\r\n\r\n")
        assert again.startswith(b"HTTP/1.1 200")
    finally:
        await server.close()
