"""``pollbridge listen``: a local webhook receiver that prints what arrives and checks signatures.

For trying a configuration out (like ``stripe listen``): point a listener at
``http://127.0.0.1:8787/hooks`` and watch each webhook, and whether it verifies, as it comes.
With a forward URL each webhook is also passed on unchanged (headers and body) to a service
under development, and that service's answer is printed and returned to the sender.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import aiohttp
import orjson
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bridge.core.signing import decode_public_key, decode_secret, verify, verify_asymmetric

MAX_BODY_BYTES = 16 * 1024 * 1024
TOLERANCE_S = 300
FORWARD_TIMEOUT_S = 30.0
FORWARD_ANSWER_BYTES = 1024 * 1024
"""At most this much of the forward URL's answer is returned to the sender."""
EXCERPT_CHARS = 200

# Headers that describe one connection, not the webhook: never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True)
class Verdict:
    """What the signature check found: ``ok`` only when a signature matches and is fresh."""

    ok: bool
    text: str


def check_signature(
    key: bytes | None,
    headers: dict[str, str],
    body: bytes,
    now_s: float,
    *,
    public_key: Ed25519PublicKey | None = None,
) -> Verdict:
    """Check the Standard Webhooks headers of one request: a ``v1`` signature against ``key``
    and, when given, a ``v1a`` (ed25519) one against ``public_key``; each given key must match."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature")
    if key is None and public_key is None:
        return Verdict(
            False, "not checked (start with --secret whsec_… or --public-key whpk_… to verify)"
        )
    if not msg_id or not timestamp.lstrip("-").isdigit() or not signature:
        return Verdict(False, "INVALID: webhook-id, webhook-timestamp or webhook-signature missing")
    ts = int(timestamp)
    # Check the signatures and the freshness apart, to say which one failed.
    failed = []
    if key is not None and not verify(key, msg_id, ts, body, signature, now_s=ts):
        failed.append("no v1 signature matches")
    if public_key is not None and not verify_asymmetric(
        public_key, msg_id, ts, body, signature, now_s=ts
    ):
        failed.append("no v1a signature verifies with the public key")
    if failed:
        return Verdict(
            False,
            f"INVALID: {' and '.join(failed)} (a different key, or the body was changed "
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
    kinds = "+".join(k for k, given in (("v1", key), ("v1a", public_key)) if given is not None)
    return Verdict(True, f"verified {kinds} (timestamp {age_s:.0f}s old)")


@dataclass(frozen=True)
class Forwarded:
    """What the forward URL answered (``status`` None when it could not be reached)."""

    url: str
    status: int | None
    duration_s: float
    body: bytes = b""
    content_type: str | None = None
    error: str | None = None

    @property
    def excerpt(self) -> str:
        return _excerpt(self.body)

    def doc(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": self.status,
            "duration_ms": round(self.duration_s * 1000, 1),
            "excerpt": self.excerpt or None,
            "error": self.error,
        }

    def text(self) -> str:
        took = f"{self.duration_s * 1000:.0f}ms"
        if self.status is None:
            return f"  forwarded to {self.url}: FAILED after {took}: {self.error}"
        excerpt = f": {self.excerpt}" if self.excerpt else ""
        return f"  forwarded to {self.url}: HTTP {self.status} in {took}{excerpt}"


def _excerpt(body: bytes) -> str:
    text = " ".join(body[: EXCERPT_CHARS * 4].decode("utf-8", "replace").split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def forward_headers(headers: dict[str, str]) -> dict[str, str]:
    """The request's headers as they are passed on: all but the connection's own."""
    return {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}


class Receiver:
    """The ``listen`` receiver as an aiohttp application; ``secret`` is a ``whsec_…`` value,
    ``public_key`` a ``whpk_…`` one, ``forward_to`` a URL (each optional)."""

    def __init__(
        self,
        *,
        out: TextIO,
        secret: str | None = None,
        public_key: str | None = None,
        status: int = 204,
        as_json: bool = False,
        forward_to: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.key = decode_secret(secret) if secret else None
        self.public_key = decode_public_key(public_key) if public_key else None
        self.status = status
        self.out = out
        self.as_json = as_json
        self.forward_to = forward_to
        self.clock = clock
        self.count = 0
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        app.router.add_route("PUT", "/{tail:.*}", self._handle)
        return app

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind and serve; return the address (``port`` 0 picks one). OSError when it cannot."""
        if self.forward_to is not None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
                auto_decompress=False,
            )
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await self.close()
            raise
        address = runner.addresses[0]
        return str(address[0]), int(address[1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verdict = check_signature(self.key, headers, body, self.clock(), public_key=self.public_key)
        forwarded = None
        if self.forward_to is not None:
            forwarded = await self._forward(request.method, headers, body)
        self._show(request.method, request.path_qs, headers, body, verdict, forwarded)
        if forwarded is None:
            return web.Response(status=self.status)
        if forwarded.status is None:
            return web.Response(status=502, text=f"pollbridge listen: {forwarded.error}\n")
        response = web.Response(status=forwarded.status, body=forwarded.body)
        if forwarded.content_type:
            response.headers["content-type"] = forwarded.content_type
        return response

    async def _forward(self, method: str, headers: dict[str, str], body: bytes) -> Forwarded:
        assert self._session is not None and self.forward_to is not None  # noqa: S101
        url = self.forward_to
        started = time.monotonic()
        try:
            async with self._session.request(
                method,
                url,
                headers=forward_headers(headers),
                data=body,
                allow_redirects=False,
                # only what the webhook carried: no User-Agent or Accept of aiohttp's own
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            ) as response:
                answer = await response.content.read(FORWARD_ANSWER_BYTES)
                return Forwarded(
                    url,
                    response.status,
                    time.monotonic() - started,
                    answer,
                    response.headers.get("content-type"),
                )
        except TimeoutError:
            error = f"no answer within {FORWARD_TIMEOUT_S:g}s"
        except aiohttp.ClientConnectorError as exc:
            # in our words: aiohttp's own text names its TLS context even for http://
            reason = exc.os_error.strerror or str(exc.os_error)
            error = f"cannot reach {exc.host}:{exc.port}: {reason}"
        except aiohttp.ClientError as exc:
            error = f"cannot reach it: {exc}"
        return Forwarded(url, None, time.monotonic() - started, error=error)

    def _show(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        verdict: Verdict,
        forwarded: Forwarded | None,
    ) -> None:
        received = datetime.now(UTC)
        try:
            doc: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            doc = body.decode("utf-8", "replace")
        self.count += 1
        if self.as_json:
            line: dict[str, Any] = {
                "received_at": received.isoformat(),
                "method": method,
                "path": path,
                "webhook_id": headers.get("webhook-id"),
                "signature_ok": verdict.ok,
                "signature": verdict.text,
                "body": doc,
            }
            if forwarded is not None:
                line["forwarded"] = forwarded.doc()
            self.out.write(orjson.dumps(line).decode() + "\n")
        else:
            text = _describe(received, method, path, headers, doc, verdict)
            if forwarded is not None:
                text = text[:-1] + forwarded.text() + "\n\n"
            self.out.write(text)
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


async def serve_forever(
    receiver: Receiver, host: str, port: int, on_ready: Callable[[str, int], None]
) -> None:
    """Serve until cancelled (Ctrl-C); ``on_ready(host, port)`` once bound."""
    bound_host, bound_port = await receiver.start(host, port)
    try:
        on_ready(bound_host, bound_port)
        await asyncio.Event().wait()
    finally:
        await receiver.close()
