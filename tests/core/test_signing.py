"""Standard Webhooks signatures, checked against the reference `standardwebhooks` library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bridge.core.signing import (
    MAX_SECRET_BYTES,
    MIN_SECRET_BYTES,
    decode_secret,
    generate_secret,
    sign,
    signature_header,
    verify,
)

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
MSG_ID = "evt_01JD0000000000000000000000"
TS = 1_790_000_000


def headers(msg_id: str, timestamp_s: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature,
    }


def test_decode_secret_returns_the_key_bytes() -> None:
    """The part after whsec_ is base64 of the key."""
    assert decode_secret(SECRET) == KEY


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (base64.b64encode(KEY).decode(), "must start with 'whsec_'"),
        ("WHSEC_" + base64.b64encode(KEY).decode(), "must start with 'whsec_'"),
        ("whsec_not*base64", "not valid base64"),
        ("whsec_" + base64.b64encode(KEY).decode().rstrip("="), "not valid base64"),
        ("whsec_" + base64.b64encode(bytes(MIN_SECRET_BYTES - 1)).decode(), "this one holds 23"),
        ("whsec_" + base64.b64encode(bytes(MAX_SECRET_BYTES + 1)).decode(), "this one holds 65"),
        ("whsec_", "this one holds 0"),
    ],
)
def test_decode_secret_says_what_is_wrong(secret: str, message: str) -> None:
    """A malformed secret raises ValueError explaining the problem."""
    with pytest.raises(ValueError, match=message):
        decode_secret(secret)


@pytest.mark.parametrize("n_bytes", [MIN_SECRET_BYTES, 32, MAX_SECRET_BYTES])
def test_generated_secrets_decode_to_fresh_keys(n_bytes: int) -> None:
    """generate_secret makes a valid whsec_ secret of the requested size, never the same twice."""
    first, second = generate_secret(n_bytes), generate_secret(n_bytes)
    assert len(decode_secret(first)) == n_bytes
    assert first != second


def test_sign_matches_the_reference_implementation() -> None:
    """Our v1 signature is byte-for-byte the one standardwebhooks computes."""
    body = b'{"id":"evt_1","type":"item.created"}'
    expected = Webhook(SECRET).sign(MSG_ID, datetime.fromtimestamp(TS, tz=UTC), body.decode())
    assert sign(KEY, MSG_ID, TS, body) == expected


@given(body=st.text(max_size=200).map(str.encode), msg_id=st.text("abcdefXYZ_0123", min_size=1))
def test_reference_receiver_verifies_our_signatures(body: bytes, msg_id: str) -> None:
    """Any body signed by us is accepted by standardwebhooks' Webhook.verify."""
    now = int(time.time())
    header = signature_header([KEY], msg_id, now, body)
    assert Webhook(SECRET).verify(body, headers(msg_id, now, header), json_parse=False) is None


def test_reference_receiver_parses_a_verified_json_body() -> None:
    """A signed JSON body verifies and decodes to the sent object."""
    now = int(time.time())
    body = b'{"id":"evt_1","data":{"after":{"n":1}}}'
    sig = sign(KEY, MSG_ID, now, body)
    assert Webhook(SECRET).verify(body, headers(MSG_ID, now, sig)) == {
        "id": "evt_1",
        "data": {"after": {"n": 1}},
    }


def test_rotation_header_verifies_under_each_key() -> None:
    """With two keys the header holds two signatures and either secret verifies it."""
    old_secret, new_secret = generate_secret(), generate_secret()
    keys = [decode_secret(old_secret), decode_secret(new_secret)]
    now = int(time.time())
    body = b"{}"
    header = signature_header(keys, MSG_ID, now, body)
    assert len(header.split(" ")) == 2
    for secret in (old_secret, new_secret):
        Webhook(secret).verify(body, headers(MSG_ID, now, header), json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers(MSG_ID, now, header), json_parse=False)


@pytest.mark.parametrize(
    ("received_body", "received_id", "timestamp_shift_s"),
    [(b'{"n":2}', MSG_ID, 0), (b'{"n":1}', "evt_other", 0), (b'{"n":1}', MSG_ID, 1)],
    ids=["body", "msg_id", "timestamp"],
)
def test_reference_receiver_rejects_tampering(
    received_body: bytes, received_id: str, timestamp_shift_s: int
) -> None:
    """Changing the body, id or timestamp after signing makes verification fail."""
    now = int(time.time())
    sig = sign(KEY, MSG_ID, now, b'{"n":1}')
    received = headers(received_id, now + timestamp_shift_s, sig)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET).verify(received_body, received, json_parse=False)


@given(st.binary(max_size=100), st.integers(min_value=0, max_value=2**40))
def test_verify_accepts_what_sign_produced(body: bytes, timestamp_s: int) -> None:
    """verify(sign(x)) holds for any body and timestamp within tolerance."""
    header = signature_header([KEY], MSG_ID, timestamp_s, body)
    assert verify(KEY, MSG_ID, timestamp_s, body, header, now_s=timestamp_s + 299)


@pytest.mark.parametrize(
    ("key", "body", "header_of", "now_s", "ok"),
    [
        (KEY, b"x", lambda h: h, TS, True),
        (KEY, b"x", lambda h: h, TS - 300, True),
        (KEY, b"x", lambda h: h, TS + 301, False),
        (KEY, b"x", lambda h: h, TS - 301, False),
        (KEY, b"y", lambda h: h, TS, False),
        (bytes(32), b"x", lambda h: h, TS, False),
        (KEY, b"x", lambda h: "v1,AAAA " + h, TS, True),
        (KEY, b"x", lambda h: h.replace("v1,", "v2,"), TS, False),
        (KEY, b"x", lambda h: "", TS, False),
    ],
)
def test_verify_checks_key_body_version_and_freshness(
    key: bytes, body: bytes, header_of: Callable[[str], str], now_s: int, ok: bool
) -> None:
    """Only a v1 signature of this body under this key, within 5 minutes, verifies."""
    header = header_of(sign(KEY, MSG_ID, TS, b"x"))
    assert verify(key, MSG_ID, TS, body, header, now_s=now_s) is ok


@given(
    key=st.binary(min_size=MIN_SECRET_BYTES, max_size=MAX_SECRET_BYTES),
    body=st.binary(max_size=5000),
    timestamp_s=st.integers(min_value=0, max_value=2**40),
)
def test_sign_is_the_hmac_of_the_signed_content(key: bytes, body: bytes, timestamp_s: int) -> None:
    """The cached keyed object gives the one-shot HMAC's bytes, for any key and body size."""
    digest = hmac.digest(key, f"{MSG_ID}.{timestamp_s}.".encode() + body, hashlib.sha256)
    assert sign(key, MSG_ID, timestamp_s, body) == "v1," + base64.b64encode(digest).decode()
    assert sign(key, MSG_ID, timestamp_s, body) == "v1," + base64.b64encode(digest).decode()
