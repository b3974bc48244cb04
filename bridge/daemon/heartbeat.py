"""The heartbeat: every few seconds the daemon proves its store writable, publishes its runtime
status, notices operator actions (``pollbridge resume`` / ``replay``) and checks that its state
file is still the one it opened."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from bridge.daemon.health import Health
from bridge.daemon.status import RuntimeStatus
from bridge.dispatcher import Dispatcher
from bridge.errors import StoreError
from bridge.store import Store

log = logging.getLogger("pollbridge.daemon")

CONTROL_CHECK_S = 2.0
"""How often the daemon looks for operator actions (resume, replay) in the store."""
RUNTIME_WRITE_S = 5.0
"""How often the runtime status is written (the store's liveness proof)."""
STORE_CALL_TIMEOUT_S = 20.0


class Heartbeat:
    """One beat every ``control_check_s``; a beat never raises."""

    def __init__(
        self,
        store: Store,
        health: Health,
        *,
        status: Callable[[], RuntimeStatus],
        counted: Callable[[Mapping[str, Mapping[str, int]]], None],
        state_lost: Callable[[str], None],
        on_internal_error: Callable[[str], None],
    ) -> None:
        self.store = store
        self.health = health
        self.dispatcher: Dispatcher | None = None
        self._status = status
        self._counted = counted
        self._state_lost = state_lost
        self._on_internal_error = on_internal_error
        self.control_check_s = CONTROL_CHECK_S
        self.runtime_write_s = RUNTIME_WRITE_S
        self._last_write = 0.0
        self._control_seen: int | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.control_check_s)
            await self.beat()

    async def beat(self, *, force_write: bool = False) -> None:
        """Notice operator actions; every few seconds write the runtime status."""
        try:
            async with asyncio.timeout(STORE_CALL_TIMEOUT_S):
                await self._notice_control()
                if force_write or time.monotonic() - self._last_write >= self.runtime_write_s:
                    await self.store.write_runtime(self._status().to_dict())
                    self._last_write = time.monotonic()
                    self.health.store_written()
                    self._counted(await self.store.delivery_counts(["pending", "dead"]))
                if self.health.state_lost is None:
                    problem = await self.store.location_problem()
                    if problem is not None:
                        self._state_lost(problem)
            self.health.store_recovered()
        except (StoreError, TimeoutError) as exc:
            self.health.store_failed(str(exc) or f"no answer within {STORE_CALL_TIMEOUT_S:g}s")
        except Exception:
            self._on_internal_error("heartbeat")
            log.exception("heartbeat: unexpected error")

    async def _notice_control(self) -> None:
        version = await self.store.control_version()
        if version == self._control_seen:
            return
        if self._control_seen is not None and self.dispatcher is not None:
            # our own pauses (410, disable_after) move the counter too, so this is no
            # evidence of an operator: say what happened, quietly
            log.debug(
                "the state's control counter moved (a pause, resume or replay): "
                "re-reading paused listeners and dispatching"
            )
            await self.dispatcher.refresh_paused(force=True)
            self.dispatcher.wake()
        self._control_seen = version
