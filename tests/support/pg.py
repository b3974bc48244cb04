"""A real PostgreSQL for tests: ``POLLBRIDGE_TEST_PG`` names it; each test gets its own schema.

Without the variable the PostgreSQL tests are skipped (the reason shows in pytest's summary); with
it set but the server unreachable they fail, so CI cannot pass by silently skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

PG_ENV = "POLLBRIDGE_TEST_PG"
SKIP_REASON = f"PostgreSQL tests need {PG_ENV}=postgresql://... (not set)"


def schema_url(dsn: str, schema: str) -> str:
    """``dsn`` with its search_path set to ``schema`` (what a user writes in ``[bridge] state``)."""
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options={quote(f'-csearch_path={schema}')}"


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test server's DSN; skips when unset, fails when set but unreachable."""
    dsn = os.environ.get(PG_ENV)
    if not dsn:
        pytest.skip(SKIP_REASON)
    import psycopg

    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as exc:
        pytest.fail(f"{PG_ENV} is set but the server is unreachable: {exc}")
    return dsn


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name, dropped (with everything in it) after the test."""
    schema = f"pb_test_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(pg_dsn, schema)


@pytest.fixture
def pg_url(pg_dsn: str, pg_schema: str) -> str:
    """A ``postgresql://`` state URL whose tables live in this test's own schema."""
    return schema_url(pg_dsn, pg_schema)
