"""Standard Webhooks 1.0 signatures: symmetric (``v1``, HMAC-SHA256) and asymmetric (``v1a``, ed25519).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``. A ``v1`` signature is the
base64 of its HMAC-SHA256 under a ``whsec_`` secret's bytes; a ``v1a`` signature is the base64 of
its ed25519 signature under a ``whsk_`` secret key, verified with the matching ``whpk_`` public key
(both keys are the base64 of the 32 raw key bytes). Several signatures are space-separated in one
header, so a receiver can rotate keys without downtime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
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


_KEYED: dict[bytes, hmac.HMAC] = {}
"""An HMAC-SHA256 object per key that has hashed nothing yet, copied for each message."""
_MAX_KEYED = 256


def sign(key: bytes, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of the message under ``key``."""
    # A copy of the keyed object, not ``hmac.digest``: the one-shot call lets go of the GIL
    # for every message, however small, and taking it back from a busy thread can wait a
    # switch interval (5 ms); an update of a small message keeps the GIL. It also hashes
    # the key's two padded blocks once per key instead of once per message.
    keyed = _KEYED.get(key)
    if keyed is None:
        if len(_KEYED) >= _MAX_KEYED:
            _KEYED.clear()  # keys of listeners reloaded away
        keyed = _KEYED[key] = hmac.new(key, digestmod=hashlib.sha256)
    mac = keyed.copy()
    mac.update(f"{msg_id}.{timestamp_s}.".encode())
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signature_header(
    keys: Sequence[bytes],
    msg_id: str,
    timestamp_s: int,
    body: bytes,
    signing_keys: Sequence[Ed25519PrivateKey] = (),
) -> str:
    """The ``webhook-signature`` value: one signature per key, space-separated (rotation).

    ``v1`` signatures for the ``whsec_`` secrets come first, then ``v1a`` ones for the ed25519 keys.
    """
    parts = [sign(k, msg_id, timestamp_s, body) for k in keys]
    parts.extend(sign_asymmetric(k, msg_id, timestamp_s, body) for k in signing_keys)
    return " ".join(parts)


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


# --- asymmetric (ed25519, v1a) ---------------------------------------------------------------


def _decode_key(text: str, prefix: str, what: str, hint: str) -> bytes:
    if not isinstance(text, str) or not text.startswith(prefix):
        raise ValueError(f"{what} must start with {prefix!r} ({hint})")
    try:
        raw = base64.b64decode(text[len(prefix) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the part after {prefix!r} is not valid base64") from exc
    return raw


def decode_signing_key(text: str) -> Ed25519PrivateKey:
    """The ed25519 private key of a ``whsk_…`` key; raise ValueError saying what is wrong.

    The key is the 32-byte seed; the 64-byte form (seed then public key, as libsodium stores it)
    is accepted too when its two halves agree.
    """
    raw = _decode_key(
        text, SIGNING_KEY_PREFIX, "an ed25519 signing key", "run: pollbridge secret --asymmetric"
    )
    if len(raw) not in (32, 64):
        raise ValueError(
            f"an ed25519 signing key holds 32 bytes (or 64: seed and public key), "
            f"this one holds {len(raw)}"
        )
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and _public_bytes(key.public_key()) != raw[32:]:
        raise ValueError("the 64-byte signing key's second half is not its public key")
    return key


def decode_public_key(text: str) -> Ed25519PublicKey:
    """The ed25519 public key of a ``whpk_…`` key; raise ValueError saying what is wrong."""
    raw = _decode_key(
        text,
        PUBLIC_KEY_PREFIX,
        "an ed25519 public key",
        "pollbridge secret --asymmetric prints one",
    )
    if len(raw) != 32:
        raise ValueError(f"an ed25519 public key holds 32 bytes, this one holds {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The ``whpk_…`` form of ``key``'s public half, for the receiver."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(_public_bytes(key.public_key())).decode()


def generate_key_pair() -> tuple[str, str]:
    """A fresh ``(whsk_…, whpk_…)`` ed25519 key pair."""
    seed = _secrets.token_bytes(32)
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return SIGNING_KEY_PREFIX + base64.b64encode(seed).decode(), public_key_text(key)


def sign_asymmetric(key: Ed25519PrivateKey, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """One ``v1a,<base64>`` ed25519 signature of the message."""
    content = f"{msg_id}.{timestamp_s}.".encode() + body
    return "v1a," + base64.b64encode(key.sign(content)).decode()


def verify_asymmetric(
    public_key: Ed25519PublicKey,
    msg_id: str,
    timestamp_s: int,
    body: bytes,
    header: str,
    *,
    now_s: float,
    tolerance_s: float = 300,
) -> bool:
    """True when one of the header's ``v1a`` signatures verifies and the timestamp is fresh."""
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    content = f"{msg_id}.{timestamp_s}.".encode() + body
    for part in header.split():
        version, _, value = part.partition(",")
        if version != "v1a":
            continue
        try:
            public_key.verify(base64.b64decode(value, validate=True), content)
        except (InvalidSignature, binascii.Error, ValueError):
            continue
        return True
    return False
