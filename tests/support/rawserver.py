"""A TCP server on 127.0.0.1 whose replies a test writes byte by byte.

For what a well-behaved HTTP server cannot produce: a reset mid-reply, a body that drips or never
ends, a length that lies, bytes that are not HTTP at all.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class RawRequest:
    """The head and body of one request the server read."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """time.monotonic() when the request was read."""


RawHandler = Callable[[socket.socket, RawRequest], None]


def read_request(conn: socket.socket) -> RawRequest | None:
    """Read one HTTP/1.1 request (head and content-length body); None if the peer went away."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawRequest(method, path, headers, rest[:length], time.monotonic())


def http_response(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
) -> bytes:
    """A complete HTTP/1.1 response; ``length`` may lie about the body's size."""
    reason = {200: "OK", 204: "No Content", 302: "Found", 500: "Internal Server Error"}.get(
        status, "Status"
    )
    all_headers = {"content-type": "application/json", "connection": "close", **(headers or {})}
    if length is not None or "transfer-encoding" not in all_headers:
        all_headers["content-length"] = str(len(body) if length is None else length)
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in all_headers.items()
    )
    return head.encode() + b"\r\n" + body


def reply(status: int = 200, body: bytes = b"", **headers: str) -> RawHandler:
    """A handler that answers one complete response and closes."""

    def handle(conn: socket.socket, _req: RawRequest) -> None:
        conn.sendall(
            http_response(status, body, {k.replace("_", "-"): v for k, v in headers.items()})
        )

    return handle


class RawServer:
    """Accepts connections on 127.0.0.1 and hands each request to ``handler``; records them."""

    def __init__(self, handler: RawHandler):
        self.handler = handler
        self.requests: list[RawRequest] = []
        self.stopping = threading.Event()
        self._lock = threading.Condition()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _addr = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                if not getattr(self.handler, "reads_request", True):
                    # a peer that accepts the connection and never reads a byte of it; the
                    # connection is recorded as an empty request
                    unread = RawRequest("", "", {}, b"", time.monotonic())
                    with self._lock:
                        self.requests.append(unread)
                        self._lock.notify_all()
                    self.handler(conn, unread)
                    return
                req = read_request(conn)
                if req is None:
                    return
                with self._lock:
                    self.requests.append(req)
                    self._lock.notify_all()
                self.handler(conn, req)
            except OSError:
                pass  # the client hung up: that is what several tests provoke

    def wait_count(self, n: int, timeout_s: float = 10) -> list[RawRequest]:
        """Block until ``n`` requests arrived; fail the test after ``timeout_s``."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= n, timeout_s):
                raise AssertionError(f"got {len(self.requests)} request(s), wanted {n}")
            return list(self.requests)

    def start(self) -> RawServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        with contextlib.suppress(OSError):
            self._sock.close()


@contextmanager
def serve_raw(handler: RawHandler) -> Iterator[RawServer]:
    """A started :class:`RawServer`, stopped at the end of the block."""
    server = RawServer(handler).start()
    try:
        yield server
    finally:
        server.stop()
