"""Hostile listeners: the real daemon against a receiver that misbehaves in every way we know.

For each behaviour the documented outcome holds (retried, paused, not followed, capped), a healthy
second listener keeps receiving every event while the hostile one misbehaves (the daemon stays
responsive), the daemon's memory stays bounded, and nothing is lost: once the hostile listener
behaves again, every event reaches it.
"""

from __future__ import annotations

import functools
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess
from tests.support.rawserver import RawHandler, RawRequest, RawServer, reply, serve_raw
from tests.support.servers import TestServer, serve
from tests.support.state import StateView

pytestmark = pytest.mark.e2e

LISTENER_TIMEOUT_S = 0.5


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@dataclass
class Sent:
    """Bytes a streaming handler managed to push before the client hung up."""

    total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int) -> None:
        with self.lock:
            self.total += n


def _endless_body(sent: Sent) -> RawHandler:
    def handle(conn: socket.socket, _req: RawRequest) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n")
        chunk = b"x" * 65536
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            conn.sendall(chunk)
            sent.add(len(chunk))

    return handle


def _late_2xx(conn: socket.socket, req: RawRequest) -> None:
    time.sleep(LISTENER_TIMEOUT_S * 3)
    reply(200, b"ok, but too late")(conn, req)


def _reset(conn: socket.socket, _req: RawRequest) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def _invalid_http(conn: socket.socket, _req: RawRequest) -> None:
    conn.sendall(b"THIS IS NOT HTTP\r\n\r\n")


@functools.cache
def _gzip_bomb(layers: int = 1) -> bytes:
    """1 GiB of zeros, gzip-compressed ``layers`` times (about 1 MiB for one layer)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    data = b"".join(packer.compress(zeros) for _ in range(1024)) + packer.flush()
    for _ in range(layers - 1):
        data = gzip.compress(data, 9)
    return data


def _bomb(layers: int) -> RawHandler:
    body = _gzip_bomb(layers)
    coding = ", ".join(["gzip"] * layers)
    return reply(200, body, content_encoding=coding, content_type="text/plain")


def _endless_1xx(conn: socket.socket, _req: RawRequest) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n")
        time.sleep(0.01)


def _huge_headers(conn: socket.socket, _req: RawRequest) -> None:
    header = b"x-padding: " + b"p" * 65536 + b"\r\n"
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n")
    for _ in range(256):  # 16 MiB of headers, never finished by a blank line before then
        conn.sendall(header)
    conn.sendall(b"\r\n")


def _binary_peer(conn: socket.socket, _req: RawRequest) -> None:
    # what a TLS server, or anything else that is not HTTP, might answer
    conn.sendall(b"\x16\x03\x01\x00\x2a\x02\x00\x00\x26\x03\x03" + bytes(range(256)) * 64)


def _never_reads(conn: socket.socket, _req: RawRequest) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.05)


_never_reads.reads_request = False  # type: ignore[attr-defined]


def _retry_after_capped(ctx: dict[str, Any]) -> None:
    now = time.time()
    attempted = [d for d in ctx["state"].deliveries(listener="bad") if d.attempts]
    assert attempted
    for d in attempted:
        assert d.state == "pending" and d.next_at is not None, d
        wait_s = d.next_at.timestamp() - now
        # an absurd Retry-After is honoured up to its documented cap of 24 hours, not beyond
        assert 23 * 3600 < wait_s <= 24 * 3600 + 60, wait_s


def _retried_on_schedule(ctx: dict[str, Any]) -> None:
    # a Retry-After that means nothing: the retry schedule (200 ms) applies
    bad = ctx["bad"]
    deadline = time.monotonic() + 15
    while max(len(v) for v in _attempts_by_event(bad).values()) < 3:
        assert time.monotonic() < deadline, "no event was attempted three times"
        time.sleep(0.1)


def _bounded_read(ctx: dict[str, Any]) -> None:
    assert ctx["state"].count(listener="bad", state="delivered") == ctx["events"]


@dataclass
class Case:
    handler: Callable[[dict[str, Any]], RawHandler]
    error: str
    """What the stored attempt error says ("" for none: the attempt succeeds)."""
    recovers: bool = True
    attempts: int = 2
    """Attempts to wait for while the listener misbehaves (2 proves it is retried)."""
    during: Callable[[dict[str, Any]], None] = lambda _ctx: None
    after: Callable[[dict[str, Any]], None] = lambda _ctx: None


def _attempts_by_event(bad: RawServer) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in list(bad.requests):
        out.setdefault(r.headers["webhook-id"], []).append(r.at)
    return out


def _retry_after_honoured(ctx: dict[str, Any]) -> None:
    deadline = time.monotonic() + 15
    while max(len(v) for v in _attempts_by_event(ctx["bad"]).values()) < 2:
        assert time.monotonic() < deadline, "no event was attempted twice"
        time.sleep(0.1)
    gaps = [
        b - a for arrivals in _attempts_by_event(ctx["bad"]).values() for a, b in pairwise(arrivals)
    ]
    # the schedule says 200 ms; Retry-After: 2 makes every retry wait ~2 s (never sooner)
    assert gaps and min(gaps) >= 1.9, gaps


def _stays_paused(ctx: dict[str, Any]) -> None:
    ctx["state"].wait(lambda v: v.listeners()["bad"].paused, what="listener bad to pause")
    seen = len(ctx["bad"].requests)
    time.sleep(1.5)  # seven retry intervals
    assert len(ctx["bad"].requests) == seen  # no attempt after the 410


def _paused_and_kept(ctx: dict[str, Any]) -> None:
    states = ctx["state"].states(listener="bad")
    assert states == {"pending": ctx["events"]}  # waiting, not lost, not dead
    assert "answered 410 Gone: paused" in ctx["log"]


def _not_followed(ctx: dict[str, Any]) -> None:
    assert ctx["redirect_target"].requests == []


def _capped(ctx: dict[str, Any]) -> None:
    longest = max(len(a.response or "") for a in ctx["state"].attempts())
    assert 0 < longest <= 4096


def _not_drained(ctx: dict[str, Any]) -> None:
    # the body never ends; the sender reads 4 KiB and hangs up, so little was ever pushed
    assert ctx["sent"].total < 16 * 1024 * 1024, ctx["sent"].total


CASES: dict[str, Case] = {
    "500": Case(lambda _ctx: reply(500, b"internal error"), "HTTP 500"),
    "429 with Retry-After": Case(
        lambda _ctx: reply(429, b"slow down", retry_after="2"),
        "HTTP 429",
        during=_retry_after_honoured,
    ),
    "410 Gone": Case(
        lambda _ctx: reply(410, b"gone"),
        "HTTP 410",
        recovers=False,
        attempts=1,
        during=_stays_paused,
        after=_paused_and_kept,
    ),
    "redirect to 127.0.0.1": Case(
        lambda ctx: reply(307, b"", location=ctx["redirect_target"].url("/elsewhere")),
        "redirects are not followed",
        after=_not_followed,
    ),
    "2xx after the timeout": Case(lambda _ctx: _late_2xx, "timed out"),
    "connection reset": Case(lambda _ctx: _reset, "Connection reset by peer"),
    "never-ending body": Case(
        lambda ctx: _endless_body(ctx["sent"]), "", attempts=1, after=_not_drained
    ),
    "10 MB error body": Case(lambda _ctx: reply(500, b"E" * 10_000_000), "HTTP 500", after=_capped),
    "invalid HTTP": Case(lambda _ctx: _invalid_http, "invalid HTTP response"),
    "gzip bomb in a 2xx": Case(lambda _ctx: _bomb(1), "", attempts=1, after=_bounded_read),
    "nested gzip bomb in a 2xx": Case(lambda _ctx: _bomb(2), "", attempts=1, after=_bounded_read),
    "endless 1xx responses": Case(lambda _ctx: _endless_1xx, "timed out"),
    "16 MiB of response headers": Case(lambda _ctx: _huge_headers, "invalid HTTP response"),
    "binary peer, not HTTP": Case(lambda _ctx: _binary_peer, "invalid HTTP response"),
    "accepts TCP, never reads": Case(lambda _ctx: _never_reads, "timed out"),
    "Retry-After garbage": Case(
        lambda _ctx: reply(503, b"busy", retry_after="soon, maybe; -5"),
        "HTTP 503",
        during=_retried_on_schedule,
    ),
    "Retry-After absurdly large": Case(
        lambda _ctx: reply(503, b"busy", retry_after="99999999999999999999"),
        "HTTP 503",
        recovers=False,
        attempts=1,
        after=_retry_after_capped,
    ),
}


def _config(tmp_path: Path, api: TestServer, good: TestServer, bad: RawServer) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("orders", api.url("/orders")),
        listener("good", good.url("/hooks")),
        listener(
            "bad",
            bad.url("/hooks"),
            timeout=f"{int(LISTENER_TIMEOUT_S * 1000)}ms",
            retry=["200ms"] * 30,
        ),
    )


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_listener(name, tmp_path, items_api, receiver):
    """The documented behaviour holds, the daemon stays responsive and bounded, nothing is lost."""
    case = CASES[name]
    api, api_server = items_api
    api.set({"id": 1, "v": 0}, {"id": 2, "v": 0})
    with serve() as redirect_target, serve_raw(reply(204)) as bad:
        ctx: dict[str, Any] = {
            "redirect_target": redirect_target,
            "sent": Sent(),
            "state": StateView(tmp_path / "state.db"),
            "bad": bad,
        }
        bad.handler = case.handler(ctx)
        config = _config(tmp_path, api_server, receiver, bad)
        with DaemonProcess(config) as daemon:
            api_server.wait_count(2)  # the baseline is in
            rss_before = _rss_kib(daemon.proc.pid)
            changes = [(1, 1), (2, 1), (1, 2)]
            for done, (key, v) in enumerate(changes, start=1):
                with api.lock:
                    api.items[key] = {"id": key, "v": v}
                # responsive: the healthy listener gets each change while the other misbehaves
                receiver.wait_count(done, timeout_s=15)
            ctx["events"] = len(changes)
            bad.wait_count(case.attempts, timeout_s=15)
            polls = len(api_server.requests)
            api_server.wait_count(polls + 2, timeout_s=15)  # still polling on schedule
            case.during(ctx)
            if case.recovers:
                bad.handler = reply(204)
                ctx["state"].wait_count(len(changes), listener="bad", state="delivered")
            rss_after = _rss_kib(daemon.proc.pid)
            code = daemon.terminate()
            ctx["log"] = daemon.output()
    assert code == 0, ctx["log"]
    assert rss_after - rss_before < 30 * 1024, (rss_before, rss_after)
    assert "Traceback" not in ctx["log"]
    errors = [a.error or "" for a in ctx["state"].attempts()]
    good = ctx["state"].count(listener="good", state="delivered")
    assert good == len(changes)
    if case.error:
        assert any(case.error in e for e in errors), errors
    if case.recovers:
        # nothing lost: every event the healthy listener got reached the hostile one too
        received = {json.loads(r.body)["id"] for r in bad.requests if r.body}
        assert received >= {r.json()["id"] for r in receiver.requests}
        assert not any("dead" in e for e in errors)
    case.after(ctx)
