"""A listener's pace: ``rate = "20/s"`` as a token bucket. Time is passed in (monotonic seconds)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.core.durations import parse_duration

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\S+)\s*$")
_UNIT_S = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class Rate:
    """``count`` requests per ``per_s`` seconds."""

    count: float
    per_s: float

    @property
    def per_second(self) -> float:
        return self.count / self.per_s

    def __str__(self) -> str:
        count = f"{self.count:g}"
        for unit, size in (("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)):
            if self.per_s == size:
                return f"{count}/{unit}"
        return f"{count}/{self.per_s:g}s"


def parse_rate(text: str) -> Rate:
    """Parse ``"20/s"``, ``"100/m"``, ``"1000/h"`` or ``"5/10s"``; raise ValueError otherwise."""
    m = _RATE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(
            f"invalid rate {text!r}; expected requests per unit of time, e.g. 20/s, 100/m, 5/10s"
        )
    count = float(m.group(1))
    unit = m.group(2).lower()
    per_s = _UNIT_S.get(unit)
    if per_s is None:
        try:
            per_s = parse_duration(unit).total_seconds()
        except ValueError:
            raise ValueError(
                f"invalid rate {text!r}: {unit!r} is not a unit of time (s, m, h, d or e.g. 10s)"
            ) from None
    if count <= 0 or per_s <= 0:
        raise ValueError(f"invalid rate {text!r}: both sides must be greater than zero")
    return Rate(count, per_s)


class TokenBucket:
    """Holds up to ``capacity`` tokens, refilled at ``rate_per_s``; one request costs one token.

    It starts full, so an idle listener may send ``capacity`` requests at once and then settles
    into the rate.
    """

    def __init__(self, rate_per_s: float, capacity: float = 1.0, *, now: float):
        if rate_per_s <= 0 or capacity < 1:
            raise ValueError("a token bucket needs a positive rate and a capacity of at least 1")
        self.rate_per_s = rate_per_s
        self.capacity = float(capacity)
        self._tokens = float(capacity)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now

    def available(self, now: float) -> int:
        """How many requests may start now."""
        self._refill(now)
        return int(self._tokens + 1e-9)

    def try_take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self._tokens + 1e-9 >= 1.0:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def wait_s(self, now: float) -> float:
        """Seconds until the next token (0 when one is there)."""
        self._refill(now)
        missing = 1.0 - self._tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate_per_s
