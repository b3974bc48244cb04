"""Real HTTP servers on 127.0.0.1 for tests: a programmable API and a recording receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request a test server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What a handler answers; ``body`` may be bytes, str or any JSON value."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[[Request], Reply]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # clients that hang up (a killed daemon, a timed-out send) are part of the tests
        pass


class TestServer:
    """A threaded HTTP server whose answers come from ``handler``; it records every request."""

    __test__ = False

    def __init__(self, handler: Handler | None = None):
        self.handler: Handler = handler or (lambda _r: Reply(204))
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stalls

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.monotonic(),
                )
                with outer.arrived:
                    outer.requests.append(req)
                    outer.arrived.notify_all()
                try:
                    reply = outer.handler(req)
                except Exception as exc:  # a bug in a test handler: answer 500 and say why
                    reply = Reply(500, f"test handler error: {exc!r}")
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                data = reply.encoded()
                try:
                    self.send_response(reply.status)
                    headers = {"content-type": "application/json", **reply.headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), _H)
        self.server.daemon_threads = True
        # a short poll interval: shutdown() returns in 50 ms instead of 500
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> TestServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(
        self, predicate: Callable[[list[Request]], bool], timeout_s: float = 10
    ) -> list[Request]:
        """Block until ``predicate(requests)`` holds; fail the test after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while not predicate(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout_s}s waiting; got {len(self.requests)} request(s)"
                    )
                self.arrived.wait(left)
            return list(self.requests)

    def wait_count(self, n: int, timeout_s: float = 10) -> list[Request]:
        return self.wait_for(lambda rs: len(rs) >= n, timeout_s)


class ItemsAPI:
    """A JSON list API whose items a test edits: ``api.items[key] = {...}``."""

    def __init__(self, wrap: str | None = "data"):
        self.items: dict[Any, dict[str, Any]] = {}
        self.wrap = wrap
        self.lock = threading.Lock()
        self.override: Reply | None = None

    def set(self, *items: dict[str, Any]) -> None:
        with self.lock:
            self.items = {it["id"]: it for it in items}

    def __call__(self, req: Request) -> Reply:
        if self.override is not None:
            return self.override
        with self.lock:
            values = list(self.items.values())
        return Reply(200, {self.wrap: values} if self.wrap else values)


@contextmanager
def serve(handler: Handler | None = None) -> Iterator[TestServer]:
    """A started :class:`TestServer`, stopped at the end of the block."""
    server = TestServer(handler).start()
    try:
        yield server
    finally:
        server.stop()
