"""Reload storms: SIGHUP every few hundred ms while deliveries are in flight.

Each reload writes a new configuration first: sources and listeners added, removed and changed
(the secret of one listener rotated at every reload, timeouts and ``max_in_flight`` changed), a
slow listener with sends in flight removed and brought back, and invalid files mixed in. Then:

- no traceback in the log, ever; every invalid file is rejected and every valid one applied;
- the listener that stays configured keeps receiving after every reload (a removed listener's
  in-flight sends never block it, and the delivery loop never dies);
- after the storm, with every listener configured again, nothing is lost (every delivery the
  store made reached its listener with a 2xx), no phantom event, duplicates identical, per-key
  order, and the stored snapshot equals the API's;
- the daemon's memory stays bounded.

``POLLBRIDGE_RELOADS`` sets the number of reloads (default 40; the long run is 200:
``POLLBRIDGE_RELOADS=200 python -m pytest tests/e2e/test_reload_storm.py -s``).
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.core.signing import generate_secret
from tests.chaos.harness import SEED, SOURCE, ChangingAPI, FlakyReceiver, check_invariants
from tests.support import configs
from tests.support.daemon import DaemonProcess, eventually
from tests.support.servers import ItemsAPI, TestServer, serve
from tests.support.state import StateView

RELOADS = int(os.environ.get("POLLBRIDGE_RELOADS", "40"))

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90 + 2 * RELOADS)]

OUTCOME = r"configuration reloaded|reload rejected|reload: applying the new configuration failed"

INVALID = {
    "TOML syntax": "[[sources]\nname = 'broken'\n",
    "unknown key": '[[listeners]]\nname = "odd"\nurl = "http://127.0.0.1:9/x"\nbogus = 1\n',
    "bad duration": '[[sources]]\nname = "later"\nurl = "http://127.0.0.1:9/x"\nevery = "soon"\n',
    "duplicate listener": "{keep}",
    "bad URL": '[[listeners]]\nname = "ftp"\nurl = "ftp://127.0.0.1/x"\n',
    # an empty file would drop every source and listener (issue 20, item 9): rejected too
    "empty file": "",
}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _not_polls(log: str) -> str:
    """The log without the routine lines of a poll or a failed attempt."""
    return "\n".join(
        line
        for line in log.splitlines()
        if not re.search(
            r"INFO pollbridge.daemon: poll \w+: ok|delivery of \S+ to \w+ failed", line
        )
    )


class Configs:
    """The storm's configurations: one valid variant per reload, drawn at random."""

    def __init__(
        self,
        tmp_path: Path,
        rng: random.Random,
        api: TestServer,
        extra: TestServer,
        fast: TestServer,
        slow: TestServer,
    ):
        self.path = tmp_path / "pollbridge.toml"
        self.rng = rng
        self.api, self.extra, self.fast, self.slow = api, extra, fast, slow
        self.retry = ["50ms", "100ms", "200ms"] + ["300ms"] * 60

    def _keep(self) -> str:
        return configs.listener(
            "keep",
            self.fast.url("/keep"),
            retry=self.retry,
            max_in_flight=self.rng.choice([1, 2, 4, 8]),
            timeout=self.rng.choice(["1s", "2s", "5s"]),
            breaker_failures=0,  # a breaker held open for 1 m would stall the liveness check
        )

    def valid(self, *, everything: bool = False) -> tuple[str, dict[str, bool]]:
        """A valid configuration and which optional parts it has."""
        has = {
            part: everything or self.rng.random() < 0.5 for part in ("slow", "rotating", "extra")
        }
        tables = [configs.source(SOURCE, self.api.url("/things"), every="100ms", baseline="emit")]
        if has["extra"]:
            tables.append(configs.source("extra", self.extra.url("/extra"), every="150ms"))
        tables.append(self._keep())
        if has["slow"]:
            tables.append(
                configs.listener(
                    "slow",
                    self.slow.url("/slow"),
                    retry=self.retry,
                    timeout=self.rng.choice(["3s", "5s"]),
                    max_in_flight=self.rng.choice([2, 4]),
                )
            )
        if has["rotating"]:
            tables.append(
                configs.listener(
                    "rotating",
                    self.fast.url("/rotating"),
                    retry=self.retry,
                    secret=generate_secret(),  # rotated at every reload
                    timeout=self.rng.choice(["1s", "3s"]),
                )
            )
        return configs.config_text(self.path.parent / "state.db", *tables), has

    def invalid(self, kind: str) -> str:
        if kind == "empty file":
            return ""
        text, _has = self.valid()
        return text + "\n" + INVALID[kind].format(keep=self._keep())

    def write(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)  # a reload never reads a half-written file


def test_reload_storm_keeps_delivering_and_loses_nothing(tmp_path):
    """SIGHUP every few hundred ms with sends in flight: no traceback, invalid files rejected,
    the remaining listener never blocked, and every invariant holds at the end."""
    rng = random.Random(SEED)
    api = ChangingAPI(random.Random(rng.random()), every_s=0.05)
    extra_api = ItemsAPI()
    extra_api.set({"id": "x1"}, {"id": "x2"})
    fast = FlakyReceiver(random.Random(rng.random()), fail_share=0.1)
    slow = FlakyReceiver(random.Random(rng.random()), delay_s=1.0, fail_share=0.0)
    view = StateView(tmp_path / "state.db")
    with (
        serve(api) as api_server,
        serve(extra_api) as extra_server,
        serve(fast) as fast_server,
        serve(slow) as slow_server,
    ):
        storm = Configs(tmp_path, rng, api_server, extra_server, fast_server, slow_server)
        first, _has = storm.valid(everything=True)
        storm.write(first)
        api.start()
        outcomes = {"valid": 0, "invalid": 0}
        rejected_kinds: list[str] = []
        with DaemonProcess(storm.path) as daemon:
            eventually(lambda: slow.in_flight > 0, 30, "a send in flight to the slow listener")
            rss_before = _rss_kib(daemon.proc.pid)
            for n in range(1, RELOADS + 1):
                if rng.random() < 0.25:
                    kind = rng.choice(sorted(INVALID))
                    storm.write(storm.invalid(kind))
                    outcomes["invalid"] += 1
                    rejected_kinds.append(kind)
                else:
                    text, _has = storm.valid()
                    storm.write(text)
                    outcomes["valid"] += 1
                keep_seen = sum(r.listener == "keep" for r in fast.log)
                daemon.signal(signal.SIGHUP)
                daemon.wait_output(OUTCOME, timeout_s=30, count=n)
                # the listener that stays keeps receiving, whatever the reload removed
                try:
                    eventually(
                        lambda seen=keep_seen: sum(r.listener == "keep" for r in fast.log) > seen,
                        30,
                        f"listener keep to receive after reload {n} (seed {SEED})",
                    )
                except AssertionError as exc:
                    daemon.terminate()  # what a stop reports says why deliveries stopped
                    raise AssertionError(f"{exc}\n{_not_polls(daemon.output())}") from None
                api_server.wait_count(len(api_server.requests) + 1, timeout_s=30)
                time.sleep(rng.uniform(0.1, 0.4))
            rss_after = _rss_kib(daemon.proc.pid)
            # every listener back, and the API at rest: the storm must settle with nothing lost
            last, _has = storm.valid(everything=True)
            storm.write(last)
            daemon.signal(signal.SIGHUP)
            daemon.wait_output(OUTCOME, timeout_s=30, count=RELOADS + 1)
            final = api.freeze()
            fast.flaky = slow.flaky = False
            view.wait(
                lambda v: v.items(SOURCE) == final and v.pending() == 0,
                90,
                f"the storm to settle (seed {SEED})",
            )
            code = daemon.terminate()
            log = daemon.output()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "reload: applying the new configuration failed" not in log, log
    assert log.count("reload rejected") == outcomes["invalid"], (rejected_kinds, log)
    assert log.count("configuration reloaded") == outcomes["valid"] + 1, log
    assert rss_after - rss_before < 50 * 1024, (rss_before, rss_after)

    records = view.events()
    assert all("keep" in r.deliveries for r in records), "an event was routed to nobody"
    events, duplicates = check_invariants(
        view, final, fast.log + slow.log, None, replay_listener="keep"
    )
    figures: dict[str, Any] = {
        "reloads": RELOADS,
        **outcomes,
        "events": events,
        "requests": len(fast.log) + len(slow.log),
        "duplicates": duplicates,
    }
    print(f"reload storm: seed {SEED}, {figures}")
