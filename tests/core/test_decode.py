"""The oversized-integer check: its fast prefilter finds what the exact check would."""

from __future__ import annotations

import pytest

from bridge.core.decode import oversized_integer

PAD = 1 << 20  # the prefilter reads 1 MiB chunks; these bodies put the number across a boundary


@pytest.mark.parametrize("offset", [-30, -19, -10, -1, 0, 5])
def test_a_long_integer_across_a_chunk_boundary_is_found(offset: int) -> None:
    """An integer beyond 64 bits is refused wherever it sits, chunk boundaries included."""
    body = b"[" + b" " * (PAD + offset) + b"12345678901234567890123]"
    message = oversized_integer(body)
    assert message is not None and "12345678901234567890123" in message


@pytest.mark.parametrize(
    "body",
    [
        b"[1234567890123456789, -9223372036854775808, 18446744073709551615]",
        b'["12345678901234567890123", {"id": "99999999999999999999"}]',
        b'{"a": 1.5, "b": [1, 2, 3]}',
        b"[" + b"1, " * PAD + b"2]",
    ],
)
def test_bodies_without_an_oversized_integer_pass(body: bytes) -> None:
    """In-range integers, long digit runs inside strings and plain bodies are accepted."""
    assert oversized_integer(body) is None
