"""Shared fixtures: real local servers and config writing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from bridge.store.sqlite import SQLiteStore
from tests.support.servers import ItemsAPI, TestServer, serve

# CI shares two cores with other work: timing-based health checks and deadlines would make the
# suite flaky without testing anything about pollbridge.
settings.register_profile(
    "pollbridge",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("pollbridge")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open SQLite store on ``state.db`` in the test's directory (a module that needs
    another store defines its own ``store``)."""
    opened = SQLiteStore(tmp_path / "state.db")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def items_api() -> Iterator[tuple[ItemsAPI, TestServer]]:
    """A changing JSON list API on 127.0.0.1 (items under ``data``)."""
    api = ItemsAPI()
    with serve(api) as server:
        yield api, server


@pytest.fixture
def receiver() -> Iterator[TestServer]:
    """A webhook receiver on 127.0.0.1 that answers 204 and records every request."""
    with serve() as server:
        yield server


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a TOML config into the test's directory and return its path."""

    def write(text: str, name: str = "pollbridge.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


# PostgreSQL fixtures (pg_dsn, pg_schema, pg_url): skipped unless POLLBRIDGE_TEST_PG is set.
pytest_plugins = ["tests.support.pg"]
