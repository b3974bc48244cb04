"""``pollbridge listen``: a local webhook receiver that prints what arrives and checks signatures.

For trying a configuration out (like ``stripe listen``): point a listener at
``http://127.0.0.1:8787/hooks`` and watch each webhook, and whether it verifies, as it comes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

import orjson

from bridge.core.signing import decode_secret, verify

MAX_BODY_BYTES = 16 * 1024 * 1024
TOLERANCE_S = 300


@dataclass(frozen=True)
class Verdict:
    """What the signature check found: ``ok`` only when a signature matches and is fresh."""

    ok: bool
    text: str


def check_signature(
    key: bytes | None, headers: dict[str, str], body: bytes, now_s: float
) -> Verdict:
    """Check the Standard Webhooks headers of one request against ``key``."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature")
    if key is None:
        return Verdict(False, "not checked (start with --secret whsec_… to verify)")
    if not msg_id or not timestamp.lstrip("-").isdigit() or not signature:
        return Verdict(False, "INVALID: webhook-id, webhook-timestamp or webhook-signature missing")
    ts = int(timestamp)
    # Check the signature and the freshness apart, to say which one failed.
    if not verify(key, msg_id, ts, body, signature, now_s=ts):
        return Verdict(
            False,
            "INVALID: no v1 signature matches (a different secret, or the body was changed "
            "on the way)",
        )
    age_s = now_s - ts
    if abs(age_s) > TOLERANCE_S:
        when = f"{age_s:.0f}s old" if age_s > 0 else f"{-age_s:.0f}s in the future"
        return Verdict(
            False,
            f"INVALID: the signature matches but the timestamp is {when} (receivers reject "
            f"more than {TOLERANCE_S}s either way: a replay, or clocks out of step)",
        )
    return Verdict(True, f"verified (timestamp {age_s:.0f}s old)")


class _Printer:
    def __init__(self, out: TextIO, as_json: bool):
        self.out = out
        self.as_json = as_json
        self.lock = threading.Lock()
        self.count = 0

    def show(
        self, method: str, path: str, headers: dict[str, str], body: bytes, verdict: Verdict
    ) -> None:
        received = datetime.now(UTC)
        try:
            doc: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            doc = body.decode("utf-8", "replace")
        with self.lock:
            self.count += 1
            if self.as_json:
                line = {
                    "received_at": received.isoformat(),
                    "method": method,
                    "path": path,
                    "webhook_id": headers.get("webhook-id"),
                    "signature_ok": verdict.ok,
                    "signature": verdict.text,
                    "body": doc,
                }
                self.out.write(orjson.dumps(line).decode() + "\n")
            else:
                self.out.write(_describe(received, method, path, headers, doc, verdict))
            self.out.flush()


def _describe(
    received: datetime,
    method: str,
    path: str,
    headers: dict[str, str],
    doc: Any,
    verdict: Verdict,
) -> str:
    summary = ""
    if isinstance(doc, dict):
        key = doc.get("key")
        key_text = key if isinstance(key, str) else orjson.dumps(key).decode()
        summary = f"  {doc.get('type', '?')}  {doc.get('source', '?')}/{key_text}"
    lines = [
        f"{received.strftime('%H:%M:%S')}  {method} {path}  {headers.get('webhook-id', '-')}"
        + summary,
        f"  signature: {verdict.text}",
    ]
    body = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() if doc is not None else "(empty)"
    lines.extend("  " + line for line in body.splitlines())
    return "\n".join(lines) + "\n\n"


def make_server(
    host: str,
    port: int,
    *,
    secret: str | None,
    status: int = 204,
    out: TextIO,
    as_json: bool = False,
) -> ThreadingHTTPServer:
    """A bound (not yet serving) receiver; ``secret`` is a ``whsec_…`` value or None."""
    key = decode_secret(secret) if secret else None
    printer = _Printer(out, as_json)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pollbridge-listen"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY_BYTES:
                self.send_error(413)
                return
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            verdict = check_signature(key, headers, body, time.time())
            printer.show(self.command, self.path, headers, body, verdict)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        do_PUT = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
