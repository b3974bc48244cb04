"""The delivery queue's rules, the same for every backend."""

from __future__ import annotations

import pytest

from bridge.core.queue_rules import QueuedEntry, coalescible_tail, may_coalesce, state_after_attempt
from bridge.models import AttemptResult


def entry(
    delivery_id: int,
    event_type: str = "updated",
    attempts: int = 0,
    ever_claimed: bool = False,
    claimed_now: bool = False,
) -> QueuedEntry:
    return QueuedEntry(delivery_id, event_type, attempts, ever_claimed, claimed_now)


@pytest.mark.parametrize(
    ("queued", "excluded", "merged"),
    [
        pytest.param([entry(1), entry(2), entry(3)], (), [1, 2, 3], id="a run of updates"),
        pytest.param([entry(1)], (), [], id="a lone update stays"),
        pytest.param([entry(1, "created"), entry(2), entry(3)], (), [2, 3], id="created kept"),
        pytest.param([entry(1), entry(2, "deleted"), entry(3)], (), [], id="only the tail"),
        pytest.param([entry(1, attempts=1), entry(2), entry(3)], (), [2, 3], id="attempted"),
        pytest.param([entry(1, ever_claimed=True), entry(2), entry(3)], (), [2, 3], id="claimed"),
        pytest.param([entry(1, claimed_now=True), entry(2), entry(3)], (), [2, 3], id="elsewhere"),
        pytest.param([entry(1), entry(2), entry(3)], (1,), [2, 3], id="in flight here"),
        pytest.param([entry(1), entry(2, ever_claimed=True), entry(3)], (), [], id="tail of one"),
    ],
)
def test_coalescible_tail(queued: list[QueuedEntry], excluded: tuple[int, ...], merged: list[int]):
    """Only a key's trailing run of updates nobody may have received is merged, oldest first."""
    run = coalescible_tail(queued, lambda e: e, excluded)
    assert [e.delivery_id for e in run] == merged


def test_a_delivery_claimed_once_is_never_mergeable():
    """Never attempted but claimed once (the process died mid-send): not mergeable."""
    assert not may_coalesce(entry(1, ever_claimed=True), ())
    assert may_coalesce(entry(1), ())


@pytest.mark.parametrize(
    ("ok", "next_at", "state"),
    [
        (True, None, "delivered"),
        (True, 5.0, "delivered"),
        (False, 5.0, "pending"),
        (False, None, "dead"),
    ],
)
def test_state_after_attempt(ok: bool, next_at: float | None, state: str):
    """A success is delivered; a failure waits for its retry, or is dead without one."""
    assert state_after_attempt(AttemptResult(ok, 200 if ok else 500, 0.1), next_at) == state
