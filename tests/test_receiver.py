"""bridge/receiver.py: ``pollbridge listen``'s signature verdicts, forwarding and command."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import time

import httpx

from bridge.core.signing import (
    decode_public_key,
    decode_secret,
    decode_signing_key,
    generate_key_pair,
    generate_secret,
    signature_header,
)
from bridge.receiver import Receiver, check_signature
from tests.support.daemon import env_for, pollbridge_cmd
from tests.support.servers import Reply, serve

BODY = b'{"id":"evt_1"}'


def _headers(key: bytes, ts: int, body: bytes = BODY) -> dict[str, str]:
    return {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header([key], "evt_1", ts, body),
    }


def test_verdicts():
    """Verified; wrong secret; changed body; stale timestamp; missing headers; no secret given."""
    key = decode_secret(generate_secret())
    other = decode_secret(generate_secret())
    now = 1_800_000_000
    assert check_signature(key, _headers(key, now), BODY, now + 2).ok
    wrong = check_signature(other, _headers(key, now), BODY, now)
    assert not wrong.ok and "no v1 signature matches" in wrong.text
    changed = check_signature(key, _headers(key, now), BODY + b" ", now)
    assert not changed.ok and "no v1 signature matches" in changed.text
    stale = check_signature(key, _headers(key, now - 600), BODY, now)
    assert not stale.ok and "600s old" in stale.text
    future = check_signature(key, _headers(key, now + 900), BODY, now)
    assert not future.ok and "900s in the future" in future.text
    missing = check_signature(key, {"webhook-id": "evt_1"}, BODY, now)
    assert not missing.ok and "missing" in missing.text
    unchecked = check_signature(None, _headers(key, now), BODY, now)
    assert not unchecked.ok and "not checked" in unchecked.text


def test_v1a_verdicts_with_a_public_key():
    """--public-key checks v1a (ed25519): verified, another key's signature, both kinds given."""
    signing, public = generate_key_pair()
    other_signing, _ = generate_key_pair()
    secret = decode_secret(generate_secret())
    now = 1_800_000_000

    def headers(*keys: str, v1: bytes | None = None) -> dict[str, str]:
        value = signature_header(
            [v1] if v1 else [], "evt_1", now, BODY, [decode_signing_key(k) for k in keys]
        )
        return {"webhook-id": "evt_1", "webhook-timestamp": str(now), "webhook-signature": value}

    pk = decode_public_key(public)
    ok = check_signature(None, headers(signing), BODY, now, public_key=pk)
    assert ok.ok and "verified v1a" in ok.text
    other = check_signature(None, headers(other_signing), BODY, now, public_key=pk)
    assert not other.ok and "no v1a signature verifies" in other.text
    both = check_signature(secret, headers(signing, v1=secret), BODY, now, public_key=pk)
    assert both.ok and "verified v1+v1a" in both.text
    v1_only = check_signature(secret, headers(v1=secret), BODY, now, public_key=pk)
    assert not v1_only.ok and "no v1a signature" in v1_only.text


def _signed(secret: str, body: bytes = BODY) -> dict[str, str]:
    ts = int(time.time())
    return {
        "content-type": "application/json",
        "user-agent": "pollbridge/test",
        "webhook-id": "evt_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header([decode_secret(secret)], "evt_1", ts, body),
        "x-team": "billing",
    }


async def test_forward_to_passes_the_webhook_on_unchanged_and_answers_what_it_answers():
    """--forward-to: the target gets the same body and headers; its answer is printed and
    returned to the sender."""
    secret = generate_secret()
    out = io.StringIO()
    with serve(lambda _r: Reply(202, "queued, thanks", {"content-type": "text/plain"})) as app:
        receiver = Receiver(out=out, secret=secret, forward_to=app.url("/dev/hooks?x=1"))
        host, port = await receiver.start("127.0.0.1", 0)
        try:
            headers = _signed(secret)
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"http://{host}:{port}/hooks", content=BODY, headers=headers
                )
        finally:
            await receiver.close()
    assert answer.status_code == 202 and answer.text == "queued, thanks"
    (got,) = app.requests
    assert got.path == "/dev/hooks" and got.query == {"x": ["1"]} and got.body == BODY
    for name, value in headers.items():
        assert got.headers[name] == value
    text = out.getvalue()
    assert "signature: verified v1" in text
    assert f"forwarded to {app.url('/dev/hooks?x=1')}: HTTP 202 in " in text
    assert "queued, thanks" in text


async def test_forward_to_a_dead_url_answers_502_and_says_why():
    """A forward URL nobody listens on: the sender gets 502, the line says it failed (JSON)."""
    out = io.StringIO()
    with serve() as gone:
        url = gone.url("/h")
    receiver = Receiver(out=out, forward_to=url, as_json=True)
    host, port = await receiver.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"http://{host}:{port}/h", content=BODY)
    finally:
        await receiver.close()
    assert answer.status_code == 502
    line = json.loads(out.getvalue())
    assert (
        line["forwarded"]["status"] is None
        and "cannot reach 127.0.0.1:" in line["forwarded"]["error"]
    )
    assert "ssl:default" not in line["forwarded"]["error"]
    assert line["signature_ok"] is False and line["body"] == {"id": "evt_1"}


def test_listen_command_verifies_v1a_and_forwards(tmp_path):
    """`pollbridge listen --public-key … --forward-to URL --json` as a user runs it."""
    signing, public = generate_key_pair()
    argv = ["listen", "--port", "0", "--json", "--public-key", public]
    with (
        serve(lambda _r: Reply(200, "ok")) as app,
        subprocess.Popen(
            pollbridge_cmd(*argv, "--forward-to", app.url("/in")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env_for(),
            text=True,
        ) as proc,
    ):
        assert proc.stderr is not None and proc.stdout is not None
        try:
            banner = proc.stderr.readline()
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+/)", banner)
            assert match, banner
            assert "v1a signatures checked" in banner
            ts = int(time.time())
            value = signature_header([], "evt_1", ts, BODY, [decode_signing_key(signing)])
            answer = httpx.post(
                match.group(1) + "hooks",
                content=BODY,
                headers={
                    "webhook-id": "evt_1",
                    "webhook-timestamp": str(ts),
                    "webhook-signature": value,
                },
            )
            line = json.loads(proc.stdout.readline())
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=20)
    assert answer.status_code == 200 and answer.text == "ok"
    assert line["signature_ok"] is True and line["forwarded"]["status"] == 200
    assert app.requests[0].body == BODY
    assert code == 0
