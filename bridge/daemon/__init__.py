"""``pollbridge run``: schedule every source, deliver every change, stop cleanly.

Around the pipeline and the dispatcher the daemon keeps itself observable and controllable:
a heartbeat that writes its runtime status to the store (proving the store writable) and
notices operator actions (``pollbridge resume`` / ``replay``) within seconds, systemd's
notify protocol and watchdog, ``/metrics`` and ``/healthz``, SIGHUP reloads, and retention.

- ``service``: the :class:`Daemon` (start, run, reload, stop)
- ``schedule``: the poll jobs; ``heartbeat``: the store liveness beat and operator actions
- ``health``: what /healthz, the watchdog and status report; ``status``: the runtime status
- ``endpoint``: /metrics and /healthz; ``reload``: what a reload changes
- ``lock``: one daemon per SQLite state; ``polling``: the record of each poll
"""

from bridge.daemon.lock import claim_sqlite_state
from bridge.daemon.service import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_POLL_FAILED,
    EXIT_STATE_LOST,
    Daemon,
)
from bridge.daemon.status import RuntimeStatus
from bridge.runtime import utcnow

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_POLL_FAILED",
    "EXIT_STATE_LOST",
    "Daemon",
    "RuntimeStatus",
    "claim_sqlite_state",
    "utcnow",
]
