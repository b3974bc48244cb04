"""A real pipeline (SQLite store, httpx poller) on a fixed clock, for in-process poll tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bridge.config import Config, load_config
from bridge.core.extract import key_text
from bridge.http.poller import HostLimiter, Poller
from bridge.outcome import PollOutcome
from bridge.pipeline import Pipeline
from bridge.store import EventQuery
from bridge.store.sqlite import SQLiteStore
from tests.support.configs import source, write_config
from tests.support.state import EVERYTHING


class FixedClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_config(
    tmp_path: Path,
    *tables: str,
    env: Mapping[str, str] | None = None,
    **bridge_fields: Any,
) -> Config:
    """Load ``tables`` (TOML: :func:`~tests.support.configs.source` and friends, or text) as
    the configuration, with its state file in ``tmp_path`` and ``bridge_fields`` in ``[bridge]``."""
    path = write_config(tmp_path / "pollbridge.toml", *tables, shutdown_grace=None, **bridge_fields)
    return load_config(path, env or {})


@dataclass
class Harness:
    config: Config
    pipeline: Pipeline
    store: SQLiteStore
    clock: FixedClock

    def source(self, name: str | None = None):  # type: ignore[no-untyped-def]
        return self.config.source(name) if name else self.config.sources[0]

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.pipeline.reconfigure(config)

    async def poll(self, name: str | None = None, *, commit: bool = True):  # type: ignore[no-untyped-def]
        return await self.pipeline.poll(self.source(name), commit=commit)

    async def events(self) -> list[dict[str, object]]:
        """Every recorded event, oldest first, as its type and key text."""
        records = await self.store.list_events(EventQuery(limit=EVERYTHING))
        return [{"type": r.event.type, "key_text": key_text(r.event.key)} for r in records]


def one_source(tmp_path: Path, name: str, url: str, **fields: Any) -> Path:
    """Write a configuration of one source ``name`` polled every minute (``fields``: its
    further keys; no items path unless given) and no listener, its state ``s.db``."""
    return write_config(
        tmp_path / "pollbridge.toml",
        source(name, url, every="1m", **{"items": None, **fields}),
        state=tmp_path / "s.db",
        shutdown_grace=None,
    )


async def poll_once(config_path: Path) -> PollOutcome:
    """Poll the first source of the configuration at ``config_path`` once, on the wall clock,
    through a store opened for this poll alone (as ``pollbridge poll --commit`` does)."""
    config = load_config(config_path, env={})
    store = SQLiteStore(config.state_location)
    await store.open()
    try:
        async with httpx.AsyncClient() as client:
            pipeline = Pipeline(config, store, Poller(client), clock=lambda: datetime.now(UTC))
            return await pipeline.poll(config.sources[0])
    finally:
        await store.close()


@asynccontextmanager
async def running(
    config: Config,
    *,
    clock: FixedClock | None = None,
    rand: float = 0.5,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Harness]:
    """A pipeline over ``config`` with its own store; ``rand`` fixes backoff jitter (0.5: none)."""
    clock = clock or FixedClock()
    store = SQLiteStore(config.state_location)
    await store.open()
    try:
        async with httpx.AsyncClient(follow_redirects=False, transport=transport) as client:
            poller = Poller(
                client, HostLimiter(config.bridge.per_host_concurrency, config.min_intervals_s())
            )
            pipeline = Pipeline(config, store, poller, clock=clock, rand=lambda: rand)
            yield Harness(config, pipeline, store, clock)
    finally:
        await store.close()


@asynccontextmanager
async def baselined(config: Config, **options: Any) -> AsyncIterator[Harness]:
    """:func:`running` (with ``options``) once its first source's first poll is done."""
    async with running(config, **options) as h:
        await h.poll()
        yield h
