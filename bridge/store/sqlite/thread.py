"""The one thread every call of the SQLite store runs on, and how calls are handed to it.

Calls made while the thread is busy (or in the same turn of the event loop) go to it together,
in one hand-over: each hand-over costs both threads a round of the GIL, more than a small
statement does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

from bridge.errors import StoreError

T = TypeVar("T")


class StoreThread:
    """A single worker thread and the queue of calls waiting for it."""

    def __init__(
        self, location: str, guard: Callable[[Callable[..., Any], tuple[Any, ...]], Any]
    ) -> None:
        self.location = location
        self._guard = guard
        """Runs one call on the thread (turning SQLite's errors into the store's)."""
        self._executor: ThreadPoolExecutor | None = None
        self._calls: dict[object, float] = {}
        """In-flight calls (queued for the thread or running on it) -> loop time begun."""
        self._queued: list[_Call] = []
        self._handing_off = False

    @property
    def running(self) -> bool:
        return self._executor is not None

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pollbridge-sqlite")

    def stop(self, *, wait: bool) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait)
            self._executor = None

    async def run(self, fn: Callable[..., T], args: tuple[Any, ...], *, first: bool) -> T:
        """Run ``fn(*args)`` on the thread, in call order; ``first``: ahead of the calls
        waiting, and handed back as soon as it is done."""
        if self._executor is None:
            raise StoreError("use", "the store is not open", location=self.location)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._queued.append(_Call(fn, args, done, first))
        if not self._handing_off:
            self._handing_off = True
            loop.call_soon(self._hand_off, loop)
        call = object()
        self._calls[call] = loop.time()
        try:
            return await done
        finally:
            del self._calls[call]

    def _hand_off(self, loop: asyncio.AbstractEventLoop) -> None:
        live = [call for call in self._queued if not call.done.cancelled()]
        batch = [c for c in live if c.first] + [c for c in live if not c.first]
        self._queued = []
        if not batch or self._executor is None:
            self._handing_off = False
            for call in batch:
                call.done.set_exception(
                    StoreError("use", "the store is not open", location=self.location)
                )
            return
        work = loop.run_in_executor(self._executor, self._run_batch, batch, loop)
        work.add_done_callback(lambda w: self._handed_back(loop, batch, w))

    def _handed_back(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Call],
        work: asyncio.Future[list[tuple[bool, Any]]],
    ) -> None:
        if work.cancelled() or work.exception() is not None:
            error = work.exception() if not work.cancelled() else None
            outcomes: list[tuple[bool, Any]] = [
                (False, error or asyncio.CancelledError()) for _ in batch
            ]
        else:
            outcomes = work.result()
        for call, (ok, value) in zip(batch, outcomes, strict=True):
            _settle_call(call.done, ok, value)
        if self._queued:
            self._hand_off(loop)
        else:
            self._handing_off = False

    def _run_batch(
        self, calls: list[_Call], loop: asyncio.AbstractEventLoop
    ) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        for i, call in enumerate(calls):
            try:
                outcome: tuple[bool, Any] = (True, self._guard(call.fn, call.args))
            except Exception as exc:
                outcome = (False, exc)
            outcomes.append(outcome)
            if call.first and i + 1 < len(calls):
                with contextlib.suppress(RuntimeError):  # a closed loop: settled with the rest
                    loop.call_soon_threadsafe(_settle_call, call.done, *outcome)
        return outcomes

    def oldest_call_s(self) -> float:
        """How long the oldest call still waiting or running has taken (0 if none)."""
        if not self._calls:
            return 0.0
        return asyncio.get_running_loop().time() - min(self._calls.values())


class _Call(NamedTuple):
    """One call waiting for (or running on) the worker thread."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: asyncio.Future[Any]
    first: bool
    """Goes ahead of the waiting calls, and is handed back as soon as it is done."""


def _settle_call(done: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if done.done():
        return  # its caller was cancelled (the call ran all the same), or settled early
    if ok:
        done.set_result(value)
    else:
        done.set_exception(value)
