"""Records the dispatcher's finished attempts in batches: every attempt that finished while the
previous batch was being written goes to the store in one call.

A send does not wait for its record: its slot goes on to the next delivery at once, and the
delivery stays out of claims (the dispatcher's ``recording`` set) until the record is written.
A record that fails for a passing reason (a locked database) is tried again for a while; one
that cannot be written at all is reported, and its delivery stays pending (it is sent again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime
from typing import Any, NamedTuple

from bridge.config import ListenerConfig
from bridge.errors import StoreError
from bridge.models import AttemptResult, Delivery
from bridge.store.base import AttemptRecord, DeliveryQueue

log = logging.getLogger("pollbridge.deliver")

RETRY_PAUSES_S = (0.1, 0.5, 1.0, 2.0, 5.0)
"""Pauses between tries of a record that failed with a StoreError (a lock passing, say)."""


class Finished(NamedTuple):
    """An attempt sent, waiting to be recorded."""

    listener: ListenerConfig
    delivery: Delivery
    result: AttemptResult
    next_at: float | None
    pause_reason: str | None
    """Why this result paused the listener (logged once it is recorded), or None."""


Recorded = Callable[[Finished, "str | BaseException"], None]
"""Told of each attempt once recorded: the delivery's state, or why it could not be."""


class AttemptRecorder:
    """One writer task at a time, taking everything submitted meanwhile as its next batch."""

    def __init__(
        self,
        store: DeliveryQueue,
        clock: Callable[[], datetime],
        recorded: Recorded,
        after_batch: Callable[[], None],
    ) -> None:
        self.store = store
        self.clock = clock
        self._recorded = recorded
        self._after_batch = after_batch
        self._waiting: list[Finished] = []
        self._writer: asyncio.Task[None] | None = None
        self._following: set[asyncio.Task[None]] = set()

    def submit(self, finished: Finished) -> None:
        """Queue one attempt's record (written with the others waiting, soon)."""
        self._waiting.append(finished)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    def follow(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` that follows a record (logging the pause it led to); :meth:`drain`
        waits for it too."""
        task = asyncio.get_running_loop().create_task(work)
        self._following.add(task)
        task.add_done_callback(self._following.discard)

    @property
    def following(self) -> int:
        """How much work that follows a record is running."""
        return len(self._following)

    def tasks(self) -> set[asyncio.Task[None]]:
        """The writer (if writing) and the work following records."""
        writer = self._writer if self._writer is not None and not self._writer.done() else None
        return self._following | ({writer} if writer is not None else set())

    async def drain(self, deadline: float) -> set[asyncio.Task[None]]:
        """Wait until everything submitted is recorded, or the loop's time is ``deadline``;
        what is still running then (for the caller to cancel)."""
        loop = asyncio.get_running_loop()
        while tasks := self.tasks():
            _done, pending = await asyncio.wait(tasks, timeout=max(deadline - loop.time(), 0.0))
            if pending:
                return self.tasks()
        return set()

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                outcomes = await self._record(batch)
            except asyncio.CancelledError:
                raise  # stopping: the deliveries stay pending and are sent again
            except Exception as exc:  # a bug in a store: every attempt of the batch hears of it
                outcomes = [exc] * len(batch)
            for finished, outcome in zip(batch, outcomes, strict=True):
                self._recorded(finished, outcome)
            self._after_batch()

    async def _record(self, batch: list[Finished]) -> list[str | BaseException]:
        """The batch's outcomes, trying again those that failed with a StoreError."""
        outcomes: list[str | BaseException] = [""] * len(batch)
        todo = list(range(len(batch)))
        for pause_s in (*RETRY_PAUSES_S, None):
            at = self.clock()
            records = [
                AttemptRecord(batch[i].delivery.id, at, batch[i].result, batch[i].next_at)
                for i in todo
            ]
            results = await self.store.record_attempts(records)
            failed = []
            for i, result in zip(todo, results, strict=True):
                outcomes[i] = result
                if isinstance(result, StoreError):
                    failed.append(i)
            if not failed or pause_s is None:
                break
            log.warning(
                "recording %s: %s; retrying",
                _deliveries(batch[i].delivery.id for i in failed),
                outcomes[failed[0]],
            )
            await asyncio.sleep(pause_s)
            todo = failed
        return outcomes


def _deliveries(ids: Iterable[int]) -> str:
    listed = [str(i) for i in ids]
    return ("delivery " if len(listed) == 1 else "deliveries ") + ", ".join(listed)
