"""Coalescing under SIGKILL: ``coalesce = true`` never merges an update that was already sent.

A slow receiver keeps the listener behind, so each key's waiting updates are merged into one
(``coalesced``); the daemon is killed ``POLLBRIDGE_CHAOS_KILLS`` times at random moments, often
with a send in flight that the receiver answers 2xx after the sender died. Such a send may be
repeated (a duplicate, same id and body), but must never be merged into a new event: the receiver
would then see a ``before`` that is not the ``after`` it already has. So:

- no webhook-id that the receiver answered 2xx is ever stored as ``coalesced``;
- each key's chain at the receiver converges: every ``before`` equals the previous ``after``,
  and replaying the chain gives the API's final state;
- and the crash invariants of :mod:`tests.chaos.harness` (no loss, no phantom, identical
  duplicates, per-key order, routing).
"""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import pytest

from tests.chaos.harness import (
    BACKENDS,
    KILLS,
    SEED,
    ChangingAPI,
    Figures,
    FlakyReceiver,
    chaos_config,
    chaos_routes,
    check_invariants,
    kill_loop,
    location_for,
    settle,
)
from tests.support.daemon import DaemonProcess
from tests.support.servers import TestServer, serve
from tests.support.state import StateView

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120 + 6 * KILLS)]

RETRY = ["50ms", "100ms", "200ms"] + ["300ms"] * 60


def _config(tmp_path: Path, state: str, api: TestServer, hooks: TestServer) -> Path:
    return chaos_config(
        tmp_path,
        state,
        api,
        hooks,
        all_fields={
            "retry": RETRY,
            "max_in_flight": 2,
            "coalesce": True,
            "timeout": "1s",
            "breaker_failures": 0,  # about crashes, not the breaker (see test_crash.py)
        },
        lifecycle_fields={"retry": RETRY, "timeout": "1s", "breaker_failures": 0},
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_coalescing_never_merges_what_was_sent(backend, tmp_path, request):
    """SIGKILLs with sends in flight: nothing the receiver acknowledged is merged away later."""
    state = location_for(backend, tmp_path, request)
    rng = random.Random(SEED)
    # mostly updates, so each key's updates pile up behind the slow receiver and get merged
    api = ChangingAPI(random.Random(rng.random()), update_share=0.9)
    receiver = FlakyReceiver(random.Random(rng.random()), delay_s=0.25, fail_share=0.1)
    view = StateView(state)
    with serve(api) as api_server, serve(receiver) as hooks:
        config = _config(tmp_path, state, api_server, hooks)
        api.start()
        try:
            # kill while a send is in flight: the receiver answers 2xx to a dead sender
            kills = kill_loop(
                [partial(DaemonProcess, config)],
                api_server,
                state,
                rng,
                KILLS,
                busy=lambda: receiver.in_flight > 0,
                within_s=receiver.delay_s,
            )
        finally:
            final = api.freeze()
        receiver.flaky = False
        settle([DaemonProcess(config)], view, final)

    acknowledged = {r.webhook_id for r in receiver.log if r.listener == "all" and r.status < 300}
    merged = {d.event_id for d in view.deliveries(listener="all", state="coalesced")}
    assert merged, f"nothing was coalesced: the test did not exercise merging (seed {SEED})"
    sent_then_merged = sorted(acknowledged & merged)
    assert sent_then_merged == [], (
        f"{len(sent_then_merged)} of {len(acknowledged)} webhook-ids the receiver answered 2xx "
        f"were later merged into another event, e.g. {sent_then_merged[:3]} (seed {SEED})"
    )
    events, duplicates = check_invariants(view, final, receiver.log, chaos_routes)
    figures = Figures(kills, events, len(receiver.log), duplicates)
    print(figures.line(f"coalesce[{backend}]") + f", {len(merged)} merged deliveries")
