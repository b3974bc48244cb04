"""Hostile APIs: every malformed, oversized, slow or lying response is a clear poll failure.

Each case checks the promise of docs/guarantees.md: the poll fails with a reason that names the
problem, records zero events and zero deliveries, leaves the snapshot untouched, and the next good
poll diffs against the untouched snapshot as if the bad response had never happened.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bridge.config import load_config
from bridge.daemon import utcnow
from bridge.http.poller import Poller
from bridge.outcome import PollOutcome
from bridge.pipeline import Pipeline
from bridge.store import Store, create_store
from tests.support.configs import listener, source, write_config
from tests.support.daemon import run_cli
from tests.support.rawserver import RawHandler, RawRequest, http_response, reply, serve_raw
from tests.support.state import StateView

GOOD_1 = orjson.dumps({"data": [{"id": 1, "v": "a"}, {"id": 2, "v": "a"}]})
GOOD_2 = orjson.dumps({"data": [{"id": 1, "v": "b"}, {"id": 2, "v": "a"}]})
GOOD_3 = orjson.dumps({"data": [{"id": 1, "v": "b"}, {"id": 3, "v": "c"}]})


def _write_config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("api", url, every="1m", timeout="1s", max_bytes="1MiB"),
        listener("hooks", "http://127.0.0.1:9/hooks"),
        shutdown_grace=None,
    )


@dataclass
class Bridge:
    """One source's pipeline over a real SQLite state file, polled on demand."""

    pipeline: Pipeline
    store: Store
    state_path: str

    async def poll(self) -> PollOutcome:
        return await self.pipeline.poll(self.pipeline.config.sources[0])

    def stored(self) -> dict[str, Any]:
        """Everything a poll may write except the source's own bookkeeping, every column of it:
        "nothing written" is a property of the file, wider than what the store interface shows
        (an item's updated_at, a delivery's claim)."""
        with sqlite3.connect(self.state_path) as db:
            return {
                "items": db.execute("SELECT * FROM items ORDER BY key_text").fetchall(),
                "events": db.execute("SELECT * FROM events ORDER BY seq").fetchall(),
                "deliveries": db.execute("SELECT * FROM deliveries ORDER BY id").fetchall(),
                "version": db.execute("SELECT snapshot_version FROM sources").fetchall(),
            }

    async def last_error(self) -> str:
        state = await self.store.get_source_state("api")
        return str(state.last_error if state else None)


@pytest.fixture
async def bridge_for(tmp_path: Path) -> AsyncIterator[Any]:
    opened: list[Any] = []

    async def make(url: str) -> Bridge:
        config = load_config(_write_config(tmp_path, url), env={})
        store = create_store(config.state_location)
        await store.open()
        client = httpx.AsyncClient()
        opened.append((store, client))
        pipeline = Pipeline(config, store, Poller(client), clock=utcnow)
        return Bridge(pipeline, store, config.state_location)

    yield make
    for store, client in opened:
        await client.aclose()
        await store.close()


# -- hostile handlers ------------------------------------------------------------------------


def _head(status: int = 200, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} OK", "connection: close"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _drip(conn: socket.socket, _req: RawRequest) -> None:
    conn.sendall(_head(content_type="application/json", content_length="100000"))
    for _ in range(400):  # one byte every 50 ms: each read succeeds, the whole never ends
        conn.sendall(b" ")
        time.sleep(0.05)


def _endless_unsized(conn: socket.socket, _req: RawRequest) -> None:
    # 50 MB with no content-length: the poller must stop reading at max_bytes
    conn.sendall(_head(content_type="application/json") + b'{"data": [')
    chunk = b'{"id": 1, "padding": "' + b"x" * 65000 + b'"},'
    for _ in range(50_000_000 // len(chunk)):
        conn.sendall(chunk)


def _declared_huge(conn: socket.socket, _req: RawRequest) -> None:
    conn.sendall(_head(content_type="application/json", content_length="50000000") + b'{"data"')


def _truncated_transfer(conn: socket.socket, _req: RawRequest) -> None:
    conn.sendall(http_response(200, GOOD_3[:20], length=len(GOOD_3)))


def _reset(conn: socket.socket, _req: RawRequest) -> None:
    conn.sendall(_head(content_type="application/json", content_length="500") + b'{"data": [')
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def _nested(depth: int) -> bytes:
    return b'{"data": [{"id": 1, "v": ' + b"[" * depth + b"]" * depth + b"}]}"


CASES: dict[str, tuple[RawHandler, str]] = {
    "truncated JSON": (reply(200, GOOD_3[:-7]), "not valid JSON: unexpected end of data"),
    "body shorter than its content-length": (_truncated_transfer, "invalid HTTP response"),
    "connection reset mid-body": (_reset, "connection lost: [Errno 104] Connection reset by peer"),
    "HTML with 200": (
        reply(200, b"<html><body>Maintenance</body></html>", content_type="text/html"),
        "response (text/html): not valid JSON",
    ),
    "error object with 200": (
        reply(200, b'{"error": "rate limited", "retry": 30}'),
        "items path '$.data[*]' matched nothing",
    ),
    "items is not an array": (
        reply(200, b'{"data": {"id": 1}}'),
        "'$.data' is an object, expected an array",
    ),
    "50 MB declared by content-length": (_declared_huge, "exceeds max_bytes = 1048576"),
    "50 MB without a content-length": (_endless_unsized, "exceeds max_bytes = 1048576"),
    "slow drip past the timeout": (_drip, "timed out after 1s"),
    "wrong content type": (
        reply(200, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", content_type="image/png"),
        "response (image/png): not valid JSON: the body is not UTF-8 (byte 0x89",
    ),
    "non-UTF-8 bytes": (
        reply(200, b'{"data": [{"id": 1, "v": "caf\xe9"}]}'),
        "the body is not UTF-8 (byte 0xe9 at offset 29)",
    ),
    "UTF-16 with a byte order mark": (
        reply(200, b"\xff\xfe" + '{"data": []}'.encode("utf-16-le")),
        "the body is UTF-16",
    ),
    "nesting beyond the parser's limit": (reply(200, _nested(2000)), "depth limit exceeded"),
    "an item nested too deeply to send": (
        reply(200, _nested(300)),
        "item #0 (key '1') cannot be hashed and sent as a webhook: it nests too deeply",
    ),
    "duplicate item keys": (
        reply(200, b'{"data": [{"id": 1, "v": "x"}, {"id": 1, "v": "y"}]}'),
        "key '1' appears twice in one poll (items #0 and #1)",
    ),
    "missing keys": (
        reply(200, b'{"data": [{"id": 1}, {"name": "no id"}]}'),
        "item #1 has no key at '$.id'",
    ),
    "a key that is an object": (
        reply(200, b'{"data": [{"id": {"a": 1}}]}'),
        "item #0: key at '$.id' is an object, expected a string or number",
    ),
    "NaN": (reply(200, b'{"data": [{"id": 1, "v": NaN}]}'), "not valid JSON"),
    "Infinity": (reply(200, b'{"data": [{"id": 1, "v": -Infinity}]}'), "not valid JSON"),
    "a float beyond double range": (
        reply(200, b'{"data": [{"id": 1, "v": 1e400}]}'),
        "number is infinity",
    ),
    "an integer beyond 64 bits": (
        reply(200, b'{"data": [{"id": 1, "v": 123456789012345678901234567890}]}'),
        "the integer 123456789012345678901234567890 at /data/0/v is beyond the 64-bit range",
    ),
    "a key beyond 64 bits": (
        reply(200, b'{"data": [{"id": 18446744073709551616}]}'),
        "the integer 18446744073709551616 at /data/0/id is beyond",
    ),
    "HTTP 500 with a JSON body": (
        reply(500, b'{"data": []}'),
        "HTTP 500",
    ),
    "HTTP 200 that is not HTTP": (
        lambda conn, _req: conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n"),
        "invalid HTTP response",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_hostile_response_is_a_clean_poll_failure(case, bridge_for):
    """A hostile response fails the poll with its reason, zero events and the snapshot untouched."""
    handler, reason = CASES[case]
    with serve_raw(reply(200, GOOD_1)) as server:
        bridge = await bridge_for(server.url("/items"))
        assert (await bridge.poll()).result == "baseline"
        server.handler = reply(200, GOOD_2)
        assert [c.type for c in (await bridge.poll()).events] == ["updated"]
        before = bridge.stored()

        server.handler = handler
        failed = await bridge.poll()
        assert not failed.ok
        assert reason in (failed.error or ""), failed.error
        assert failed.events == [] and failed.changes == []
        assert bridge.stored() == before
        assert reason in await bridge.last_error()

        # the bad response left no trace: the next good poll diffs against the same snapshot
        server.handler = reply(200, GOOD_3)
        recovered = await bridge.poll()
    assert recovered.ok, recovered.error
    assert sorted((e.type, e.key) for e in recovered.events) == [
        ("created", "3"),
        ("deleted", "2"),
    ]


async def test_exact_large_integers_are_kept(bridge_for):
    """Integers up to the 64-bit limits, and long digit strings, arrive exactly, never rounded."""
    body = (
        b'{"data": [{"id": 1, "max": 18446744073709551615, "min": -9223372036854775808,'
        b' "s": "123456789012345678901234567890"}]}'
    )
    with serve_raw(reply(200, GOOD_1)) as server:
        bridge = await bridge_for(server.url("/items"))
        await bridge.poll()
        server.handler = reply(200, body)
        outcome = await bridge.poll()
    assert outcome.ok, outcome.error
    after = next(e.after for e in outcome.events if e.key == "1")
    assert after["max"] == 18446744073709551615
    assert after["min"] == -9223372036854775808
    assert after["s"] == "123456789012345678901234567890"


async def test_json_with_a_misleading_content_type_is_accepted(bridge_for):
    """The body decides, not the header: valid JSON labelled text/html is polled normally."""
    with serve_raw(reply(200, GOOD_1, content_type="text/html")) as server:
        bridge = await bridge_for(server.url("/items"))
        outcome = await bridge.poll()
    assert outcome.ok and outcome.item_count == 2


async def test_duplicate_member_names_resolve_the_same_way_every_poll(bridge_for):
    """``{"v": 1, "v": 2}`` keeps the last value (as JSON.parse does), so no spurious events."""
    body = b'{"data": [{"id": 1, "v": "a", "v": "z"}, {"id": 2, "v": "a"}]}'
    with serve_raw(reply(200, body)) as server:
        bridge = await bridge_for(server.url("/items"))
        await bridge.poll()
        again = await bridge.poll()
        server.handler = reply(200, GOOD_1)
        changed = await bridge.poll()
    assert again.result == "unchanged"
    assert [(e.key, e.before["v"], e.after["v"]) for e in changed.events] == [("1", "z", "a")]


def test_cli_poll_names_the_oversized_integer(tmp_path):
    """``poll --commit`` on a giant integer exits 1 and says which number and where."""
    body = b'{"data": [{"id": 1}, {"id": 2, "amount": 99999999999999999999999}]}'
    with serve_raw(reply(200, body)) as server:
        config = _write_config(tmp_path, server.url("/items"))
        result = run_cli("poll", "api", "--commit", "--config", str(config))
    assert result.returncode == 1
    assert "99999999999999999999999 at /data/1/amount" in result.stderr
    assert "Traceback" not in result.stderr
    assert StateView(tmp_path / "state.db").items("api") == {}
