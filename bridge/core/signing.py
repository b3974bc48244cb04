"""Standard Webhooks 1.0 signatures (symmetric, ``v1``).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature is the base64 of
its HMAC-SHA256 under the secret's bytes. Receivers verify with any Standard Webhooks library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_…`` secret; raise ValueError saying what is wrong."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret must start with 'whsec_' (run: pollbridge secret)")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the part after 'whsec_' is not valid base64") from exc
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"a webhook secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
            f"this one holds {len(raw)}"
        )
    return raw


def generate_secret(n_bytes: int = 32) -> str:
    """A fresh random ``whsec_`` secret."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(n_bytes)).decode()


def sign(key: bytes, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of the message under ``key``."""
    content = f"{msg_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: list[bytes], msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per key, space-separated (rotation)."""
    return " ".join(sign(k, msg_id, timestamp_s, body) for k in keys)


def verify(
    key: bytes,
    msg_id: str,
    timestamp_s: int,
    body: bytes,
    header: str,
    *,
    now_s: float,
    tolerance_s: float = 300,
) -> bool:
    """True when one of the header's ``v1`` signatures matches and the timestamp is fresh."""
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    expected = sign(key, msg_id, timestamp_s, body).split(",", 1)[1]
    for part in header.split():
        version, _, value = part.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False
