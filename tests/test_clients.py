"""The daemon's HTTP clients (aiohttp transport): requests arrive as httpx would send them."""

from __future__ import annotations

import contextlib
import gzip
import socket
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from yarl import URL

from bridge.errors import PollError
from bridge.http.connections import ClientPool, EnvironmentProxies
from bridge.http.poller import Poller
from tests.support.servers import Reply, serve

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@contextlib.asynccontextmanager
async def new_poll_client() -> AsyncIterator[httpx.AsyncClient]:
    """The daemon's poll client (aiohttp transport), closed afterwards."""
    pool = ClientPool(httpx.Limits(max_connections=100, max_keepalive_connections=20))
    try:
        yield pool.get()
    finally:
        await pool.aclose()


async def test_poll_client_sends_path_and_query_unchanged() -> None:
    """Encoded paths and query values reach the API byte for byte (no re-quoting)."""
    with serve(lambda _r: Reply(200, [{"id": 1}])) as server:
        async with new_poll_client() as client:
            fetched = await Poller(client).fetch(
                "s",
                server.url("/a%2Fb/c d"),
                params={"q": "x y&z", "t": True, "sep": "a+b/c"},
                timeout_s=5,
                max_bytes=1000,
                now=NOW,
            )
        (request,) = server.requests
    assert orjson.loads(fetched.body) == [{"id": 1}]
    assert request.path == "/a%2Fb/c%20d"
    assert request.query == {"q": ["x y&z"], "t": ["true"], "sep": ["a+b/c"]}


async def test_poll_client_decodes_a_gzip_body() -> None:
    """A gzip-encoded response is decoded before parsing, as with httpx's own transport."""
    body = gzip.compress(b'[{"id": 7}]')
    with serve(lambda _r: Reply(200, body, {"content-encoding": "gzip"})) as server:
        async with new_poll_client() as client:
            fetched = await Poller(client).fetch(
                "s", server.url("/x"), timeout_s=5, max_bytes=1000, now=NOW
            )
    assert orjson.loads(fetched.body) == [{"id": 7}]


async def test_url_credentials_are_sent_as_basic_auth_only() -> None:
    """user:password in a source URL arrives as one Authorization header, not in the URL."""
    with serve(lambda _r: Reply(200, [])) as server:
        url = server.url("/x").replace("http://", "http://ann:s%40cret@")
        async with new_poll_client() as client:
            await Poller(client).fetch("s", url, timeout_s=5, max_bytes=1000, now=NOW)
        (request,) = server.requests
    assert request.headers["authorization"] == httpx.BasicAuth("ann", "s@cret")._auth_header
    assert request.path == "/x"


async def test_refused_poll_is_a_connection_failure() -> None:
    """A port nobody listens on reads as 'connection failed', not as a timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with new_poll_client() as client:
        with pytest.raises(PollError, match="connection failed"):
            await Poller(client).fetch(
                "s", f"http://127.0.0.1:{port}/x", timeout_s=5, max_bytes=1000, now=NOW
            )


def _bomb(coding: str, layers: int, decoded_bytes: int) -> bytes:
    """``decoded_bytes`` zeros encoded ``layers`` times with ``coding`` (gzip or deflate)."""
    data = b""
    wbits = 31 if coding == "gzip" else 15
    encoder = zlib.compressobj(9, zlib.DEFLATED, wbits)
    step = b"\0" * (1 << 20)
    parts = [encoder.compress(step) for _ in range(decoded_bytes >> 20)]
    data = b"".join(parts) + encoder.flush()
    for _ in range(layers - 1):
        data = zlib.compress(data, 9, wbits=wbits) if coding == "deflate" else gzip.compress(data)
    return data


@pytest.mark.parametrize(
    ("encoding", "coding", "layers"),
    [("gzip, gzip", "gzip", 2), ("deflate, deflate", "deflate", 2), ("gzip", "gzip", 1)],
)
async def test_nested_content_codings_stay_within_max_bytes(encoding, coding, layers) -> None:
    """A small body that decodes to 256 MiB through its codings costs ~max_bytes of memory."""
    body = _bomb(coding, layers, 256 << 20)
    max_bytes = 1 << 20
    headers = {"content-encoding": encoding}
    with serve(lambda _r: Reply(200, body, headers)) as server:
        async with new_poll_client() as client:
            tracemalloc.start()
            try:
                with pytest.raises(PollError, match="exceeds max_bytes"):
                    await Poller(client).fetch(
                        "s", server.url("/x"), timeout_s=30, max_bytes=max_bytes, now=NOW
                    )
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    assert len(body) < 300_000
    assert peak < 16 * max_bytes, f"{peak:,} bytes allocated while decoding"


async def test_nested_codings_within_max_bytes_are_decoded() -> None:
    """gzip inside gzip that fits max_bytes is decoded whole, like httpx decodes it."""
    body = gzip.compress(gzip.compress(b'[{"id": 7}]'))
    with serve(lambda _r: Reply(200, body, {"content-encoding": "gzip, gzip"})) as server:
        async with new_poll_client() as client:
            fetched = await Poller(client).fetch(
                "s", server.url("/x"), timeout_s=5, max_bytes=1000, now=NOW
            )
    assert orjson.loads(fetched.body) == [{"id": 7}]


async def test_connection_errors_are_in_our_words_without_ssl_default() -> None:
    """A refused http:// connection names host and port, never aiohttp's 'ssl:default'."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with new_poll_client() as client:
        with pytest.raises(PollError) as failed:
            await Poller(client).fetch(
                "s", f"http://127.0.0.1:{port}/x", timeout_s=5, max_bytes=1000, now=NOW
            )
    assert "ssl:" not in str(failed.value)
    assert f"connection failed: cannot connect to 127.0.0.1:{port}: connection refused" in str(
        failed.value
    )


def test_environment_proxies_are_read_once_and_honour_no_proxy() -> None:
    """HTTP(S)_PROXY apply by scheme; NO_PROXY hosts and their subdomains go direct."""
    proxies = EnvironmentProxies(
        {
            "http": "http://proxy:3128",
            "https": "http://tls-proxy:3128",
            "no": "internal.example, .corp",
        }
    )
    assert proxies.for_url(URL("http://api.example.com/x")) == "http://proxy:3128"
    assert proxies.for_url(URL("https://api.example.com/x")) == "http://tls-proxy:3128"
    assert proxies.for_url(URL("https://internal.example/x")) is None
    assert proxies.for_url(URL("https://a.b.corp/x")) is None
    assert EnvironmentProxies.none().for_url(URL("http://api.example.com/")) is None


async def test_poll_client_goes_through_the_environment_proxy(monkeypatch) -> None:
    """A poll client made with HTTP_PROXY set sends its requests to the proxy."""
    with serve(lambda _r: Reply(200, [{"id": 1}])) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with new_poll_client() as client:
            fetched = await Poller(client).fetch(
                "s", "http://api.invalid/items?x=1", timeout_s=5, max_bytes=1000, now=NOW
            )
        (request,) = proxy.requests
    assert orjson.loads(fetched.body) == [{"id": 1}]
    assert request.headers["host"] == "api.invalid"
