"""The daemon's scheduled poll respects a source's not_before (backoff, Retry-After)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.config import Config
from bridge.daemon import Daemon, claim_sqlite_state
from bridge.errors import StoreError
from tests.support.configs import source
from tests.support.fake_apis import FakeAPI
from tests.support.pipelines import FixedClock, make_config
from tests.support.servers import TestServer, serve


def _config(tmp_path: Path, server: TestServer) -> Config:
    return make_config(tmp_path, source("s", server.url("/items"), every="10s"))


async def test_scheduled_poll_is_skipped_while_postponed(tmp_path):
    """While now < not_before the scheduled run makes no request; afterwards it polls again."""
    with serve(FakeAPI(count=3)) as server:
        config = _config(tmp_path, server)
        clock = FixedClock()
        daemon = Daemon(config, clock=clock)
        await daemon._start()
        try:
            await daemon.store.update_source_state(
                "s", not_before=clock.now + timedelta(seconds=30)
            )
            assert await daemon.poll_source("s") is None
            assert server.requests == []
            clock.advance(31)
            outcome = await daemon.poll_source("s")
            assert outcome is not None and outcome.ok
            assert len(server.requests) == 1
        finally:
            await daemon._close()


async def test_run_once_skips_postponed_sources(tmp_path):
    """`run --once` leaves a postponed source alone and does not count it as failed."""
    with serve(FakeAPI(count=3)) as server:
        config = _config(tmp_path, server)
        clock = FixedClock()
        store_daemon = Daemon(config, clock=clock)
        await store_daemon.store.open()
        await store_daemon.store.update_source_state("s", not_before=clock.now + timedelta(hours=1))
        await store_daemon.store.close()
        code = await Daemon(config, clock=clock).run_once()
    assert code == 0
    assert server.requests == []


async def test_a_second_daemon_on_one_sqlite_state_is_refused(tmp_path):
    """Two daemons on one SQLite file would poll and deliver everything twice: the second is
    refused with the first one's pid, and may start once the first has stopped."""
    with serve(FakeAPI(count=3)) as server:
        config = _config(tmp_path, server)
        first = Daemon(config)
        await first._start()
        try:
            with pytest.raises(
                StoreError, match=rf"another pollbridge daemon \(pid {os.getpid()}\)"
            ):
                await Daemon(config).run_once()
        finally:
            await first._close()
        assert await Daemon(config).run_once() == 0
    assert claim_sqlite_state("postgresql://u@h/db") is None
