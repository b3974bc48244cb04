"""Signing for listeners: several secrets for rotation, and ed25519 (v1a)."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from bridge.core.signing import (
    decode_public_key,
    decode_secret,
    decode_signing_key,
    generate_key_pair,
    generate_secret,
    public_key_text,
    sign_asymmetric,
    signature_header,
    verify,
    verify_asymmetric,
)

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_800_000_000


def test_every_secret_signs_and_each_verifies_alone():
    """secrets = [new, old]: one v1 per secret, and a receiver with either one accepts."""
    secrets = [generate_secret(), generate_secret(), generate_secret()]
    body = b'{"id":"evt_1"}'
    now = int(time.time())  # the reference verifier checks freshness against its own clock
    header = signature_header([decode_secret(s) for s in secrets], "evt_1", now, body)
    assert [p.split(",")[0] for p in header.split(" ")] == ["v1", "v1", "v1"]
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(now), "webhook-signature": header}
    for secret in secrets:
        assert Webhook(secret).verify(body, headers) == {"id": "evt_1"}
    assert not verify(decode_secret(generate_secret()), "evt_1", now, body, header, now_s=now)


def test_v1a_follows_the_v1_signatures_and_does_not_confuse_v1_verifiers():
    """With a secret and a signing key the header is `v1,… v1a,…`; both verify independently."""
    signing_key, public_key = generate_key_pair()
    secret = generate_secret()
    body = b"{}"
    header = signature_header(
        [decode_secret(secret)], "evt_2", NOW, body, [decode_signing_key(signing_key)]
    )
    v1, v1a = header.split(" ")
    assert v1.startswith("v1,") and v1a.startswith("v1a,")
    assert verify(decode_secret(secret), "evt_2", NOW, body, header, now_s=NOW)
    assert verify_asymmetric(decode_public_key(public_key), "evt_2", NOW, body, header, now_s=NOW)


@RELAXED
@given(st.binary(max_size=200), st.text(min_size=1, max_size=20), st.integers(0, 2**33))
def test_asymmetric_verify_accepts_its_signature_and_rejects_tampering(body, msg_id, ts):
    """verify(sign(x)) holds; a changed body, id or timestamp fails."""
    signing_key, public_key = generate_key_pair()
    key, pub = decode_signing_key(signing_key), decode_public_key(public_key)
    header = sign_asymmetric(key, msg_id, ts, body)
    assert verify_asymmetric(pub, msg_id, ts, body, header, now_s=ts)
    assert not verify_asymmetric(pub, msg_id, ts, body + b"x", header, now_s=ts)
    assert not verify_asymmetric(pub, msg_id + "x", ts, body, header, now_s=ts)
    assert not verify_asymmetric(pub, msg_id, ts, body, header, now_s=ts + 301)


def test_another_public_key_does_not_verify():
    """A v1a signature verifies only with its own key pair's public key."""
    signing_key, _ = generate_key_pair()
    _, other_public = generate_key_pair()
    header = sign_asymmetric(decode_signing_key(signing_key), "evt", NOW, b"x")
    assert not verify_asymmetric(
        decode_public_key(other_public), "evt", NOW, b"x", header, now_s=NOW
    )


def test_key_pair_halves_belong_together_and_the_64_byte_form_is_accepted():
    """whpk_ is the public half of whsk_; seed+public (libsodium's 64 bytes) decodes the same."""
    signing_key, public_key = generate_key_pair()
    key = decode_signing_key(signing_key)
    assert public_key_text(key) == public_key
    seed = base64.b64decode(signing_key[5:])
    long_form = "whsk_" + base64.b64encode(seed + base64.b64decode(public_key[5:])).decode()
    assert public_key_text(decode_signing_key(long_form)) == public_key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("whsec_" + base64.b64encode(b"x" * 32).decode(), "must start with 'whsk_'"),
        ("whsk_not base64!", "not valid base64"),
        ("whsk_" + base64.b64encode(b"x" * 31).decode(), "holds 32 bytes"),
        ("whsk_" + base64.b64encode(b"x" * 64).decode(), "second half is not its public key"),
    ],
)
def test_bad_signing_keys_say_what_is_wrong(text, message):
    """A malformed signing_key is rejected with the reason."""
    with pytest.raises(ValueError, match=message):
        decode_signing_key(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("whsk_" + base64.b64encode(b"x" * 32).decode(), "must start with 'whpk_'"),
        ("whpk_" + base64.b64encode(b"x" * 33).decode(), "holds 32 bytes"),
    ],
)
def test_bad_public_keys_say_what_is_wrong(text, message):
    """A malformed whpk_ key is rejected with the reason."""
    with pytest.raises(ValueError, match=message):
        decode_public_key(text)
