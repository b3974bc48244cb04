"""The console's operations: the CLI's replay, resume and accept (the same store calls), a
poll now, and a test event sent to a listener. Each answers one sentence for the page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from bridge.core.ids import new_event_id
from bridge.models import Event
from bridge.store import ReplayRequest, Store

if TYPE_CHECKING:
    from bridge.config import Config, ListenerConfig
    from bridge.dispatcher import Dispatcher
    from bridge.http.sender import Sender


class _Schedule(Protocol):
    """What the console asks of the daemon's schedule."""

    def poll_now(self, name: str, now: datetime) -> bool: ...


@dataclass(frozen=True)
class ActionResult:
    """What an action did, for the page's notice (``ok`` False: shown as an error)."""

    ok: bool
    message: str
    status: int = 200
    """The HTTP status of the JSON answer: 404 for an unknown name, 409 for nothing to do."""


class Actions(Protocol):
    """What the console's POST forms do."""

    async def replay_event(self, event_id: str) -> ActionResult: ...
    async def replay_dead(self, listener: str) -> ActionResult: ...
    async def resume_listener(self, listener: str) -> ActionResult: ...
    async def accept_held(self, source: str) -> ActionResult: ...
    async def poll_now(self, source: str) -> ActionResult: ...
    async def send_test(self, listener: str) -> ActionResult: ...


class DaemonLike(Protocol):
    """The parts of the running daemon the actions use."""

    @property
    def store(self) -> Store: ...
    @property
    def config(self) -> Config: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...
    @property
    def dispatcher(self) -> Dispatcher | None: ...
    @property
    def schedule(self) -> _Schedule: ...


def sample_event(listener: ListenerConfig, sources: Sequence[str], now: datetime) -> Event:
    """The event ``send-test`` sends: a fresh id (so no receiver drops it as a duplicate), the
    first source the listener takes, and an update of an item keyed ``pollbridge-test``."""
    taken = list(listener.sources) if listener.sources is not None else list(sources)
    return Event(
        id=new_event_id(now),
        seq=0,
        source=taken[0] if taken else "pollbridge-test",
        key="pollbridge-test",
        type="updated",
        timestamp=now,
        before={"id": "pollbridge-test", "status": "before", "test": True},
        after={"id": "pollbridge-test", "status": "after", "test": True},
        changes=[{"op": "replace", "path": "/status", "value": "after"}],
    )


async def send_test_event(
    sender: Sender, listener: ListenerConfig, sources: Sequence[str], now: datetime
) -> ActionResult:
    """POST a sample event to ``listener`` through its real sender (its URL, TLS, headers,
    format and signature); nothing is recorded in the state."""
    event = sample_event(listener, sources, now)
    result = await sender.send(listener, event, now)
    took = f"{result.duration_s * 1000:.0f} ms"
    if result.ok:
        return ActionResult(
            True, f"{listener.name}: test event {event.id} answered HTTP {result.status} in {took}"
        )
    return ActionResult(
        False, f"{listener.name}: test event {event.id} failed after {took}: {result.error}"
    )


class DaemonActions:
    """:class:`Actions` on a running daemon: the store calls of ``pollbridge replay``,
    ``resume`` and ``accept``, then a nudge so the daemon acts within the second."""

    def __init__(self, daemon: DaemonLike):
        self.daemon = daemon

    def _wake(self) -> None:
        dispatcher = self.daemon.dispatcher
        if dispatcher is not None:
            dispatcher.wake()

    def _listener(self, name: str) -> ListenerConfig | None:
        return next((lst for lst in self.daemon.config.listeners if lst.name == name), None)

    def _sources(self) -> list[str]:
        return [s.name for s in self.daemon.config.sources]

    async def replay_event(self, event_id: str) -> ActionResult:
        result = await self.daemon.store.replay(
            ReplayRequest(event_ids=(event_id,)), self.daemon.clock()
        )
        if result.unknown_event_ids:
            return ActionResult(False, f"no event {event_id} in the state", 404)
        if not result.requeued:
            return ActionResult(False, f"{event_id}: no delivery to replay", 409)
        self._wake()
        return ActionResult(
            True, f"{event_id}: queued {result.requeued} delivery(ies) again (same event id)"
        )

    async def replay_dead(self, listener: str) -> ActionResult:
        result = await self.daemon.store.replay(
            ReplayRequest(dead=True, listener=listener), self.daemon.clock()
        )
        if not result.requeued:
            return ActionResult(False, f"{listener}: no dead delivery to replay", 409)
        self._wake()
        return ActionResult(True, f"{listener}: queued {result.requeued} dead delivery(ies) again")

    async def resume_listener(self, listener: str) -> ActionResult:
        store = self.daemon.store
        states = {s.name: s for s in await store.list_listener_states()}
        state = states.get(listener)
        if state is None and self._listener(listener) is None:
            return ActionResult(False, f"no listener named {listener!r}", 404)
        if state is None or not state.paused:
            return ActionResult(False, f"{listener}: was not paused", 409)
        await store.set_listener_paused(listener, False, None, self.daemon.clock())
        self._wake()
        return ActionResult(
            True,
            f"{listener}: resumed (was paused: {state.paused_reason or 'no reason recorded'}); "
            f"{state.pending} delivery(ies) pending",
        )

    async def accept_held(self, source: str) -> ActionResult:
        if source not in self._sources():
            return ActionResult(False, f"no source named {source!r}", 404)
        store = self.daemon.store
        state = await store.get_source_state(source)
        if state is None or not state.held_reason:
            return ActionResult(False, f"{source}: not held; nothing to accept", 409)
        await store.update_source_state(source, accept_requested=True)
        polling = self._poll_soon(source)
        return ActionResult(
            True,
            f"{source}: the held result ({state.held_reason}) will be applied at its next poll"
            + (" (starting now)" if polling else ""),
        )

    async def poll_now(self, source: str) -> ActionResult:
        if source not in self._sources():
            return ActionResult(False, f"no source named {source!r}", 404)
        if not self._poll_soon(source):
            return ActionResult(False, f"{source}: the scheduler is not running", 409)
        return ActionResult(True, f"{source}: polling now (backoff and Retry-After still apply)")

    def _poll_soon(self, source: str) -> bool:
        """Move the source's scheduled poll to now: the scheduler still runs one at a time."""
        return self.daemon.schedule.poll_now(source, self.daemon.clock())

    async def send_test(self, listener: str) -> ActionResult:
        config = self._listener(listener)
        dispatcher = self.daemon.dispatcher
        if config is None:
            return ActionResult(False, f"no listener named {listener!r}", 404)
        if dispatcher is None:
            return ActionResult(False, "the daemon is not sending yet", 409)
        return await send_test_event(
            dispatcher.sender, config, self._sources(), self.daemon.clock()
        )
