"""One poll of an incremental source, as the pipeline runs it: what it asks for (a window of
changes since the cursor, or the complete list) and the cursor it stores.

The rules are in :mod:`bridge.core.incremental`; this module binds them to a source's
configuration and stored state, so that :mod:`bridge.pipeline` only asks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from bridge.config import SourceConfig
from bridge.core.diff import DiffPlan
from bridge.core.incremental import (
    CursorError,
    IncrementalSpec,
    PollPlan,
    WindowPlan,
    advance,
    capped_warning,
    cursor_text,
    cursor_value,
    greatest_cursor,
    item_cursor,
    load_cursor,
    plan_poll,
    plan_window,
    window_request,
    without_deleted,
)
from bridge.errors import ExtractError
from bridge.http.pages import Request
from bridge.models import Item, SourceState

_T = TypeVar("_T")


class WindowSizes:
    """How many items each source's last window returned (in this process), to notice an API
    that caps its answers: a window of the same size twice in a row."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def warning(self, source: SourceConfig, returned: int) -> str | None:
        previous = self._last.get(source.name)
        self._last[source.name] = returned
        paginated = source.paginate is not None
        return capped_warning(returned, source.params, paginated=paginated, previous=previous)


@dataclass(frozen=True)
class WindowResult:
    """What one window changes, as the pipeline records it."""

    plan: DiffPlan
    """Every change to the snapshot (deletes included, even with ``deletes = false``)."""
    emitted: DiffPlan
    """The changes that become events."""
    upserts: list[Item]
    cursor: str | None
    """The cursor to store."""
    item_count: int
    result: str
    """``ok``, or ``rebaseline`` for the first window after the source's definition changed."""
    silent: bool
    """A silent re-baseline: the snapshot and cursor move, no event is sent."""
    warning: str | None


@dataclass(frozen=True)
class IncrementalPoll:
    """What one poll of an incremental source asks for, and what it knew before."""

    source: str
    spec: IncrementalSpec
    plan: PollPlan
    request: Request | None
    """The window's parameters and body; None for a complete list."""
    stored: datetime | None
    """The cursor stored before this poll."""
    reconciled_at: datetime | None

    @property
    def window(self) -> bool:
        return self.plan.kind == "window"

    @property
    def sent(self) -> str | None:
        """The lower bound as sent (None: none sent)."""
        if self.plan.since is None:
            return None
        return str(cursor_value(self.plan.since, self.spec.format))

    def describe(self) -> str:
        """For logs and the poll output: what was asked for, and why."""
        if not self.window:
            return f"complete list ({self.plan.why})"
        bound = "no lower bound" if self.sent is None else f"since {self.sent}"
        return f"window {bound} ({self.plan.why})"

    def after_window(self, found: WindowPlan) -> str | None:
        """The cursor to store after a window: it never moves back."""
        new = advance(self.stored, found.cursor)
        return None if new is None else cursor_text(new)

    def complete_list(
        self, pages: Sequence[Sequence[Item]], old: Mapping[str, str]
    ) -> tuple[str | None, list[list[Item]]]:
        """A complete list (first poll, re-baseline, reconcile): the cursor to store, and the
        pages as the ordinary diff sees them, soft-deleted items absent.

        The cursor is the list's greatest value when none is stored (a first poll or a
        re-baseline); a reconcile keeps the stored one, and the windows carry on from there.
        ``deleted_when`` is read only for items that are new or changed: an item stored with
        the same hash was not deleted then and is not now.
        """
        if self.stored is not None:
            cursor: str | None = cursor_text(self.stored)
        else:
            seen = self._checked(lambda: greatest_cursor([i for p in pages for i in p], self.spec))
            cursor = None if seen is None else cursor_text(seen)
        return cursor, without_deleted(pages, self.spec, old)

    def analyse(
        self,
        source: SourceConfig,
        pages: Sequence[Sequence[Item]],
        old: dict[str, str],
        sizes: WindowSizes,
    ) -> WindowResult:
        """The window's diff against the snapshot (ExtractError on a bad cursor value)."""
        found: WindowPlan = self._checked(lambda: plan_window(pages, old, self.spec))
        plan = found.plan
        # deletes = false: deleted items leave the snapshot without an event
        emitted = plan if source.deletes else DiffPlan(plan.created, plan.updated, [])
        return WindowResult(
            plan,
            emitted,
            found.upserts,
            self.after_window(found),
            len(old) + len(plan.created) - len(plan.deleted),
            "rebaseline" if self.plan.rebaseline else "ok",
            self.plan.rebaseline and source.rebaseline == "silent",
            sizes.warning(source, found.returned),
        )

    def in_scope(self, plan: DiffPlan, upserts: Sequence[Item]) -> DiffPlan:
        """A reconcile's events: with ``start`` a time, an unknown item last changed before it
        was never asked for (nor is it a change since ``start``): it joins the snapshot silently."""
        start = self.spec.start
        if start is None or not plan.created:
            return plan
        created = set(plan.created)
        fresh = [i for i in upserts if i.key_text in created]
        moments = self._checked(lambda: [item_cursor(i, self.spec) for i in fresh])
        early = {i.key_text for i, moment in zip(fresh, moments, strict=True) if moment < start}
        if not early:
            return plan
        return DiffPlan([k for k in plan.created if k not in early], plan.updated, plan.deleted)

    def _checked(self, run: Callable[[], _T]) -> _T:
        try:
            return run()
        except CursorError as exc:
            raise ExtractError(self.source, str(exc)) from exc


def plan_incremental(
    source: SourceConfig,
    state: SourceState | None,
    *,
    first: bool,
    rebaseline: bool,
    now: datetime,
) -> IncrementalPoll | None:
    """What this poll of ``source`` asks for; None for a source that is not incremental."""
    if source.mode != "incremental" or source.incremental is None:
        return None
    spec = source.incremental.spec
    stored = None if first or rebaseline or state is None else load_cursor(state.cursor)
    plan = plan_poll(
        spec,
        cursor=stored,
        reconciled_at=state.reconciled_at if state is not None else None,
        first=first,
        rebaseline=rebaseline,
        now=now,
    )
    request = None
    if plan.kind == "window":
        params, body = window_request(spec, source.params, source.request_body, plan.since)
        request = Request(params, body)
    return IncrementalPoll(
        source.name,
        spec,
        plan,
        request,
        stored,
        state.reconciled_at if state is not None else None,
    )
