"""PostgreSQL behind a network that goes silent: every store call is bounded, and it recovers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

from bridge.errors import StoreError
from bridge.store.postgres import PostgresStore
from tests.support.pg import schema_url

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 12, 1, tzinfo=UTC)


class SilentProxy:
    """A TCP proxy on 127.0.0.1 in front of the test server that can stop forwarding: while
    paused it neither reads nor writes (no FIN, no RST), as a network that drops packets."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._thread = threading.Thread(target=self._run, name="silent-proxy", daemon=True)

    def __enter__(self) -> SilentProxy:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in self._writers:
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await self._server.wait_closed()

    def pause(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.append(client_w)
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        self._writers.append(server_w)
        await asyncio.gather(
            self._pump(client_r, server_w), self._pump(server_r, client_w), return_exceptions=True
        )
        for writer in (client_w, server_w):
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await self._flowing.wait()
            data = await reader.read(65536)
            if not data:
                return
            await self._flowing.wait()  # bytes read just before a pause are held, not sent
            writer.write(data)
            await writer.drain()


@pytest.fixture
def proxy(pg_dsn: str) -> Iterator[SilentProxy]:
    parts = urlsplit(pg_dsn)
    with SilentProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as running:
        yield running


@pytest.fixture
async def store(proxy: SilentProxy, pg_dsn: str, pg_schema: str) -> AsyncIterator[PostgresStore]:
    """A store whose connections all go through the proxy, with a short call deadline."""
    parts = urlsplit(pg_dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    proxied = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))
    s = PostgresStore(
        schema_url(proxied, pg_schema) + "&connect_timeout=2", max_connections=2, call_timeout_s=2
    )
    await s.open()
    yield s
    proxy.resume()
    await s.close()


async def test_a_silent_network_fails_the_call_by_its_deadline_and_then_recovers(
    store: PostgresStore, proxy: SilentProxy
):
    """While the network swallows everything a call fails with a StoreError naming it (instead
    of hanging for good); once packets flow again the next calls succeed, nothing restarted."""
    await store.update_source_state("orders", item_count=3)
    proxy.pause()
    with pytest.raises(StoreError, match=r"get_source_state failed: no answer from PostgreSQL"):
        await store.get_source_state("orders")
    with pytest.raises(StoreError, match=r"update_source_state failed: no answer"):
        await store.update_source_state("orders", item_count=4)
    assert store.oldest_call_s() == 0.0  # nothing left hanging
    proxy.resume()
    state = await store.get_source_state("orders")
    assert state is not None and state.item_count == 3
    await store.update_source_state("orders", item_count=5)
    state = await store.get_source_state("orders")
    assert state is not None and state.item_count == 5


async def test_pooled_connections_carry_the_session_timeouts(pg_dsn: str, pg_schema: str):
    """statement, lock and idle-in-transaction timeouts are set; the URL's own choice wins."""
    options = quote(f"-csearch_path={pg_schema} -clock_timeout=3s")
    store = PostgresStore(f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}options={options}")
    await store.open()
    try:
        async with store._connection("test") as conn:
            cur = await conn.execute(
                "SELECT current_setting('statement_timeout') AS s, "
                "current_setting('lock_timeout') AS l, "
                "current_setting('idle_in_transaction_session_timeout') AS i"
            )
            row = await cur.fetchone()
    finally:
        await store.close()
    assert row is not None
    assert (row["s"], row["l"], row["i"]) == ("30s", "3s", "1min")


def test_keepalives_are_added_to_the_url_unless_it_names_its_own():
    """TCP keepalives and connect/user timeouts bound a connection the network dropped."""
    from bridge.store.postgres import bounded_conninfo

    params = psycopg.conninfo.conninfo_to_dict(bounded_conninfo("postgresql://u@h/db"))
    assert (params["keepalives"], params["keepalives_idle"], params["tcp_user_timeout"]) == (
        "1",
        "10",
        "30000",
    )
    mine = psycopg.conninfo.conninfo_to_dict(
        bounded_conninfo("postgresql://u@h/db?keepalives_idle=60")
    )
    assert mine["keepalives_idle"] == "60"
