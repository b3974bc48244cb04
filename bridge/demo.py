"""``pollbridge demo``: an example API, pollbridge and a verifying receiver, all offline.

A second listener, the "warehouse", is down for the demo's first ``OUTAGE_S`` seconds, so the
web console (on 127.0.0.1, its URL and token printed at the start) has failed and dead
deliveries to show and replay. Everything runs on 127.0.0.1 with SQLite in a temporary
directory and is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import orjson

from bridge.config import load_config
from bridge.core.signing import decode_secret, generate_secret, verify
from bridge.daemon import Daemon

OUTAGE_S = 20.0
"""How long the warehouse listener answers 503 after the demo starts."""

_PRODUCTS = ["kettle", "lamp", "desk", "chair", "mug", "rug", "clock", "plant"]
_STATUSES = ["open", "paid", "packed", "shipped", "delivered"]


class ExampleAPI:
    """A tiny order API whose items change every few seconds."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)  # noqa: S311 - demo data
        self.lock = threading.Lock()
        self.next_id = 1001
        self.orders: dict[int, dict[str, Any]] = {}
        for _ in range(3):
            self._create()

    def _create(self) -> None:
        oid = self.next_id
        self.next_id += 1
        self.orders[oid] = {
            "id": oid,
            "product": self.rng.choice(_PRODUCTS),
            "status": "open",
            "total": round(self.rng.uniform(5, 300), 2),
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def mutate(self) -> None:
        """One random change: a new order, an order moving on, or a delivered one removed."""
        with self.lock:
            roll = self.rng.random()
            if roll < 0.2 or len(self.orders) < 2:
                self._create()
                return
            oid = self.rng.choice(sorted(self.orders))
            order = self.orders[oid]
            if order["status"] == "delivered":
                del self.orders[oid]
                return
            order["status"] = _STATUSES[_STATUSES.index(order["status"]) + 1]
            order["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")

    def body(self) -> bytes:
        with self.lock:
            return orjson.dumps({"data": list(self.orders.values())})


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _api_handler(api: ExampleAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = api.body()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _describe(event: dict[str, Any]) -> str:
    data = event["data"]
    if event["type"] == "item.updated":
        parts = [
            f"{op['path'].lstrip('/')}: {_short(_at(data['before'], op['path']))} -> {_short(op.get('value'))}"
            for op in data["changes"]
            if op["op"] in ("replace", "add")
        ]
        return "; ".join(parts) or "changed"
    item = data["after"] or data["before"] or {}
    return ", ".join(f"{k}={_short(v)}" for k, v in item.items() if k != "id")


def _at(doc: Any, pointer: str) -> Any:
    for token in pointer.split("/")[1:]:
        if isinstance(doc, dict):
            doc = doc.get(token.replace("~1", "/").replace("~0", "~"))
        else:
            return None
    return doc


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _receiver_handler(
    secret: str, out: TextIO, lock: threading.Lock
) -> type[BaseHTTPRequestHandler]:
    key = decode_secret(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            ok = verify(
                key,
                self.headers.get("webhook-id", ""),
                int(self.headers.get("webhook-timestamp", "0")),
                body,
                self.headers.get("webhook-signature", ""),
                now_s=time.time(),
            )
            event = orjson.loads(body)
            mark = "signature ok " if ok else "BAD SIGNATURE"
            with lock:
                print(
                    f"  [receiver] {mark}  {event['type']:<13} {event['source']}/{event['key']:<5}"
                    f"  {_describe(event)}",
                    file=out,
                    flush=True,
                )
            self.send_response(204 if ok else 401)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _warehouse_handler(outage_s: float) -> type[BaseHTTPRequestHandler]:
    """A receiver that is down (503) for ``outage_s`` seconds, then takes everything."""
    up_at = time.monotonic() + outage_s

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            down = time.monotonic() < up_at
            body = b"warehouse system under maintenance" if down else b""
            self.send_response(503 if down else 204)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def _servers(
    api: ExampleAPI, secret: str, out: TextIO, outage_s: float
) -> Iterator[tuple[str, str, str]]:
    lock = threading.Lock()
    api_server = _serve(_api_handler(api))
    receiver = _serve(_receiver_handler(secret, out, lock))
    warehouse = _serve(_warehouse_handler(outage_s))
    try:
        yield (
            f"http://127.0.0.1:{api_server.server_address[1]}/orders",
            f"http://127.0.0.1:{receiver.server_address[1]}/hooks",
            f"http://127.0.0.1:{warehouse.server_address[1]}/stock",
        )
    finally:
        for server in (api_server, receiver, warehouse):
            server.shutdown()
            server.server_close()


def run_demo(
    duration_s: float | None,
    *,
    interval_s: float = 2.0,
    out: TextIO = sys.stdout,
    outage_s: float = OUTAGE_S,
) -> int:
    """Run the demo for ``duration_s`` seconds (None: until Ctrl-C); return the exit code."""
    api = ExampleAPI()
    secret = generate_secret()
    token = secrets.token_urlsafe(16)
    with (
        tempfile.TemporaryDirectory(prefix="pollbridge-demo-") as tmp,
        _servers(api, secret, out, outage_s) as (api_url, hook_url, warehouse_url),
    ):
        config_path = Path(tmp) / "pollbridge.toml"
        config_path.write_text(
            f"""# written by `pollbridge demo`
[bridge]
state = "{tmp}/pollbridge.db"
log_level = "warning"
http = "127.0.0.1:0"
http_token = "{token}"

[[sources]]
name = "orders"
url = "{api_url}"
every = "{interval_s:g}s"
items = "$.data[*]"
key = "$.id"
ignore = ["$.updated_at"]
baseline = "emit"

[[listeners]]
name = "receiver"
url = "{hook_url}"
secret = "{secret}"
retry = ["1s", "2s", "5s"]

[[listeners]]
name = "warehouse"
url = "{warehouse_url}"
secret = "{secret}"
retry = ["1s", "2s", "5s"]
breaker_failures = 0
"""
        )
        config = load_config(config_path, env={})
        print(
            "pollbridge demo (offline; Ctrl-C to stop)\n"
            f"  example API   {api_url}  (orders change every few seconds)\n"
            f"  receiver      {hook_url}  (verifies Standard Webhooks signatures)\n"
            f"  warehouse     {warehouse_url}  (a second listener, down for the first "
            f"{outage_s:g} s)\n"
            f"  config        {config_path}\n"
            f"  state         SQLite in {tmp}\n",
            file=out,
            flush=True,
        )
        return asyncio.run(_run(config, api, duration_s, interval_s, out, token))


async def _run(
    config: Any,
    api: ExampleAPI,
    duration_s: float | None,
    interval_s: float,
    out: TextIO,
    token: str,
) -> int:
    daemon = Daemon(config)
    # each failed attempt to the warehouse would be a warning line; its dead deliveries still
    # show (errors), and the console has the details
    logging.getLogger("pollbridge.deliver").setLevel(logging.ERROR)

    async def announce_console() -> None:
        while daemon.endpoint.url is None:  # noqa: ASYNC110 - the daemon has no event for it
            await asyncio.sleep(0.05)
        print(
            f"  console       {daemon.endpoint.url}/ui/  (events live; log in with the token "
            f"{token} to replay the warehouse's failed deliveries)\n",
            file=out,
            flush=True,
        )

    async def change_and_stop() -> None:
        started = time.monotonic()
        while duration_s is None or time.monotonic() - started < duration_s:
            await asyncio.sleep(interval_s * 1.5)
            api.mutate()
        daemon.request_stop()

    driver = asyncio.create_task(change_and_stop())
    announcer = asyncio.create_task(announce_console())
    try:
        code = await daemon.run()
    finally:
        for task in (driver, announcer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    print(
        f"\ndemo finished: {daemon.stats.polls_ok} polls; "
        "README.md shows how to point it at your own API",
        file=out,
    )
    return code
