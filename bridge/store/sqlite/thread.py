"""The one thread every call of the SQLite store runs on, and how calls are handed to it.

The thread takes every call waiting when it is free (calls made while it is busy, or in the
same turn of the event loop, run together) and hands their outcomes back to the event loop in
one go: each hand-back costs both threads a round of the GIL, more than a small statement
does. It goes on to the calls queued meanwhile without waiting for the event loop, which may
be busy for milliseconds at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from bridge.errors import StoreError

T = TypeVar("T")


class StoreThread:
    """A single worker thread and the queues of calls waiting for it."""

    def __init__(
        self, location: str, guard: Callable[[Callable[..., Any], tuple[Any, ...]], Any]
    ) -> None:
        self.location = location
        self._guard = guard
        """Runs one call on the thread (turning SQLite's errors into the store's)."""
        self._thread: threading.Thread | None = None
        self._ready = threading.Condition()
        """Guards the two queues and ``_stopping``; notified when a call is queued."""
        self._first: deque[_Call] = deque()
        """Calls that go ahead of ``_rest``."""
        self._rest: deque[_Call] = deque()
        self._stopping = False
        self._calls: dict[object, float] = {}
        """In-flight calls (queued for the thread or running on it) -> loop time begun."""

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._stopping = False
        # A daemon thread: a store never closed must not keep the interpreter alive; SQLite's
        # journal makes a write cut short at exit a write that never happened.
        self._thread = threading.Thread(target=self._serve, name="pollbridge-sqlite", daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool) -> None:
        """No new calls; the queued ones still run. ``wait``: until they have."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if wait and thread is not threading.current_thread():
            thread.join()

    async def run(self, fn: Callable[..., T], args: tuple[Any, ...], *, first: bool) -> T:
        """Run ``fn(*args)`` on the thread, in call order; ``first``: ahead of the calls
        waiting, and handed back as soon as it is done."""
        if self._thread is None:
            raise StoreError("use", "the store is not open", location=self.location)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        with self._ready:
            (self._first if first else self._rest).append(_Call(fn, args, done, first, loop))
            self._ready.notify()
        call = object()
        self._calls[call] = loop.time()
        try:
            return await done
        finally:
            del self._calls[call]

    def _serve(self) -> None:
        ready = self._ready
        while True:
            with ready:
                while not self._first and not self._rest and not self._stopping:
                    ready.wait()
                if not self._first and not self._rest:
                    return  # stopped, and nothing left to run
                batch = [*self._first, *self._rest]
                self._first.clear()
                self._rest.clear()
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Call]) -> None:
        outcomes: list[tuple[_Call, bool, Any]] = []
        last = len(batch) - 1
        for i, call in enumerate(batch):
            if call.done.cancelled():
                continue  # its caller gave up before it started
            try:
                outcome: tuple[_Call, bool, Any] = (call, True, self._guard(call.fn, call.args))
            except Exception as exc:
                outcome = (call, False, exc)
            if call.first and i < last:
                _hand_back(call.loop, [outcome])  # the others wait for it: now
            else:
                outcomes.append(outcome)
        loops = {call.loop for call, _, _ in outcomes}
        for loop in loops:
            _hand_back(loop, [o for o in outcomes if o[0].loop is loop])

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
    loop: asyncio.AbstractEventLoop


def _hand_back(loop: asyncio.AbstractEventLoop, outcomes: list[tuple[_Call, bool, Any]]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(_settle_calls, outcomes)


def _settle_calls(outcomes: list[tuple[_Call, bool, Any]]) -> None:
    for call, ok, value in outcomes:
        done = call.done
        if done.done():
            continue  # its caller was cancelled (the call ran all the same)
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)
