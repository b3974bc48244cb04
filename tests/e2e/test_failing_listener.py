"""One listener failing fast never stops delivery to the others (the real daemon, real servers)."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from bridge.core.signing import generate_secret
from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess
from tests.support.servers import Reply, Request, serve

pytestmark = pytest.mark.e2e


class ChangingAPI:
    """30 items whose values change on every request: the API of a very busy service."""

    def __init__(self) -> None:
        self.version = itertools.count()
        self.lock = threading.Lock()

    def __call__(self, _req: Request) -> Reply:
        with self.lock:
            v = next(self.version)
        return Reply(200, {"data": [{"id": i, "v": v} for i in range(30)]})


def _config(tmp_path: Path, api: str, bad: str, good: str) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("busy", api, every="100ms"),
        listener("bad", bad, secret=generate_secret(), max_in_flight=16, retry=["100ms"] * 3),
        listener("good", good, secret=generate_secret(), max_in_flight=16),
        shutdown_grace="2s",
    )


def test_a_listener_answering_500_at_once_never_stops_the_others(tmp_path):
    """The reproduction of the dispatcher crash: 'bad' answers 500 at once, its breaker opens
    while claimed deliveries are being started; 'good' keeps receiving until the end."""
    with (
        serve(ChangingAPI()) as api,
        serve(lambda _r: Reply(500, "no")) as bad,
        serve(lambda _r: Reply(204)) as good,
    ):
        daemon = DaemonProcess(_config(tmp_path, api.url("/items"), bad.url("/h"), good.url("/h")))
        try:
            good.wait_count(30, timeout_s=20)
            bad.wait_count(10, timeout_s=20)  # enough failures to open the breaker
            # well after the breaker opened: 'good' must still be receiving
            time.sleep(3)
            before = len(good.requests)
            time.sleep(2)
            assert len(good.requests) > before, "good stopped receiving webhooks"
        finally:
            code = daemon.terminate()
        log = daemon.log_path.read_text()
    assert code == 0, log
    assert "circuit breaker OPEN" in log
    assert "circuit breaker is open: no request may start" not in log
    assert "unexpected" not in log
