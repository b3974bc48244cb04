"""The circuit breaker's state machine, with time passed in."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.breaker import CircuitBreaker

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_opens_after_consecutive_failures_only():
    """A success resets the count; `failures` failures in a row open it."""
    b = CircuitBreaker(3, 60)
    assert b.record_failure(0) is None
    assert b.record_failure(0) is None
    assert b.record_success(0) is None
    assert b.record_failure(1) is None
    assert b.record_failure(1) is None
    t = b.record_failure(2)
    assert t is not None and (t.old, t.new, t.failures, t.cooldown_s) == ("closed", "open", 3, 60)
    assert b.state == "open"
    assert b.wait_s(2) == 60
    assert b.wait_s(50) == 12


def test_one_probe_after_the_cooldown_then_closed_on_success():
    """Cooldown over: exactly one request (the probe); its success closes the breaker."""
    b = CircuitBreaker(1, 10)
    b.record_failure(0)
    with pytest.raises(RuntimeError):
        b.start(5)
    probe, t = b.start(10)
    assert probe and t is not None and (t.old, t.new) == ("open", "half-open")
    assert b.limit() == 1
    assert b.wait_s(11) == math.inf  # no second request while the probe is out
    t = b.record_success(12, probe=True)
    assert t is not None and (t.old, t.new) == ("half-open", "closed")
    assert b.limit() is None and b.wait_s(12) == 0
    assert b.start(12) == (False, None)


def test_failed_probes_double_the_cooldown_up_to_the_cap():
    """1m, 2m, 4m … capped at max_cooldown_s; a success starts again from 1m."""
    b = CircuitBreaker(1, 60, max_cooldown_s=300)
    t = b.record_failure(0)
    assert t is not None and t.cooldown_s == 60
    now = 0.0
    seen = []
    for _ in range(5):
        now = b.open_until
        b.start(now)
        t = b.record_failure(now, probe=True)
        assert t is not None and (t.old, t.new) == ("half-open", "open")
        seen.append(t.cooldown_s)
    assert seen == [120, 240, 300, 300, 300]
    now = b.open_until
    b.start(now)
    b.record_success(now, probe=True)
    t = b.record_failure(now)
    assert t is not None and t.cooldown_s == 60


def test_results_of_requests_started_before_opening_do_not_move_it():
    """Only the probe decides: stray results while open or half-open are ignored."""
    b = CircuitBreaker(1, 10)
    b.record_failure(0)
    assert b.record_success(1) is None and b.state == "open"
    assert b.record_failure(1) is None and b.open_until == 10
    b.start(10)
    assert b.record_success(11) is None and b.state == "half-open"


def test_a_probe_without_an_answer_lets_another_probe_go():
    """A cancelled probe (shutdown, our own error) does not leave the breaker stuck."""
    b = CircuitBreaker(1, 10)
    b.record_failure(0)
    b.start(10)
    assert b.wait_s(10) == math.inf
    b.release_probe()
    assert b.wait_s(10) == 0
    assert b.start(10) == (True, None)


@RELAXED
@given(st.lists(st.sampled_from(["ok", "fail", "tick", "start"]), max_size=80))
def test_invariants_hold_for_any_history(history):
    """Never more than one probe; cooldown within bounds; closed means no limit."""
    b = CircuitBreaker(3, 5, max_cooldown_s=40)
    now = 0.0
    probes_out = 0
    for step in history:
        if step == "tick":
            now += 3
        elif step == "start" and b.wait_s(now) == 0:
            probe, _ = b.start(now)
            probes_out += probe
        elif step in ("ok", "fail"):
            probe = probes_out > 0
            if probe:
                probes_out -= 1
            (b.record_success if step == "ok" else b.record_failure)(now, probe=probe)
        assert probes_out <= 1
        assert 5 <= b.current_cooldown_s() <= 40
        assert (b.limit() is None) == (b.state == "closed")
        if b.state == "closed":
            assert b.failures < 3
