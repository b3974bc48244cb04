"""bridge/receiver.py: the signature verdicts ``pollbridge listen`` prints."""

from __future__ import annotations

from bridge.core.signing import decode_secret, generate_secret, signature_header
from bridge.receiver import check_signature

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
