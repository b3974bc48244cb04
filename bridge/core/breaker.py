"""A listener's circuit breaker. Time is passed in (monotonic seconds).

closed --(``failures`` consecutive failed attempts)--> open --(cooldown over)--> half-open:
one probe request. The probe's success closes the breaker; its failure opens it again for twice
the previous cooldown, up to ``max_cooldown_s``. Results of requests that started before the
breaker opened do not move it: only the probe decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half-open"]


@dataclass(frozen=True)
class Transition:
    """A change of state, for the log."""

    old: BreakerState
    new: BreakerState
    failures: int
    """Consecutive failed attempts so far."""
    cooldown_s: float
    """The cooldown just started (when ``new`` is open), else 0."""


class CircuitBreaker:
    """Stops sending to a listener that keeps failing, and probes it now and then."""

    def __init__(self, failures: int, cooldown_s: float, max_cooldown_s: float = 3600.0) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("a breaker needs at least one failure and a positive cooldown")
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max(max_cooldown_s, cooldown_s)
        self.state: BreakerState = "closed"
        self.failures = 0
        self.trips = 0
        """Opens since the last success: the cooldown doubles with each."""
        self.open_until = 0.0
        self.probe_in_flight = False

    def current_cooldown_s(self) -> float:
        """The cooldown of the current (or last) open period."""
        return min(self.cooldown_s * 2.0 ** max(0, self.trips - 1), self.max_cooldown_s)

    def limit(self) -> int | None:
        """How many requests may run at once: None (no limit) when closed, else the one probe."""
        return None if self.state == "closed" else 1

    def wait_s(self, now: float) -> float:
        """Seconds until a request may start: 0 now, ``inf`` while the probe is out."""
        if self.state == "closed":
            return 0.0
        if self.probe_in_flight:
            return math.inf
        if self.state == "open":
            return max(0.0, self.open_until - now)
        return 0.0

    def start(self, now: float) -> tuple[bool, Transition | None]:
        """A request starts (call only when :meth:`wait_s` is 0): is it the probe?"""
        if self.state == "closed":
            return False, None
        if self.wait_s(now) > 0:
            raise RuntimeError("the circuit breaker is open: no request may start")
        self.probe_in_flight = True
        if self.state == "open":
            self.state = "half-open"
            return True, Transition("open", "half-open", self.failures, 0.0)
        return True, None

    def record_success(self, now: float, *, probe: bool = False) -> Transition | None:
        """A request got a 2xx."""
        if self.state == "closed":
            self.failures = 0
            self.trips = 0
            return None
        if not probe:
            return None
        old = self.state
        self.state = "closed"
        self.failures = 0
        self.trips = 0
        self.probe_in_flight = False
        return Transition(old, "closed", 0, 0.0)

    def record_failure(self, now: float, *, probe: bool = False) -> Transition | None:
        """A request failed (the receiver's fault, not ours)."""
        if self.state == "closed":
            self.failures += 1
            if self.failures >= self.threshold:
                return self._open(now, "closed")
            return None
        if not probe:
            return None
        self.failures += 1
        self.probe_in_flight = False
        return self._open(now, self.state)

    def release_probe(self) -> None:
        """The probe ended without an answer (cancelled, or our own error): allow another."""
        if self.state == "half-open":
            self.probe_in_flight = False

    def _open(self, now: float, old: BreakerState) -> Transition:
        self.state = "open"
        self.trips += 1
        cooldown = self.current_cooldown_s()
        self.open_until = now + cooldown
        return Transition(old, "open", self.failures, cooldown)
