"""confirm_deletes: items that blink out of a list are deleted only once missing N polls in a row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.cli.running import tracked_lines
from bridge.config import Config
from tests.support.configs import source
from tests.support.event_logs import BlinkingList
from tests.support.pipelines import baselined, make_config
from tests.support.servers import TestServer, serve


@pytest.fixture
def blinking() -> Iterator[tuple[BlinkingList, TestServer]]:
    fake = BlinkingList(12)
    with serve(fake) as server:
        yield fake, server


def _config(tmp_path: Path, server: TestServer, **fields: Any) -> Config:
    """The ``tickets`` source; ``fields`` override ``confirm_deletes = 2`` and add keys."""
    tickets = source(
        "tickets", server.url("/items"), every="10s", **{"confirm_deletes": 2, **fields}
    )
    return make_config(tmp_path, tickets)


def _deleted(outcome) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(c.key_text for c in outcome.changes if c.type == "deleted")


async def test_an_item_that_blinks_out_for_one_poll_emits_nothing(
    tmp_path: Path, blinking: tuple[BlinkingList, TestServer]
) -> None:
    """Missing once, back the next poll: no event, its snapshot never left."""
    fake, server = blinking
    async with baselined(_config(tmp_path, server)) as h:
        fake.blink([3], answers=1)
        missing = await h.poll()
        assert missing.result == "ok" and missing.changes == []
        assert missing.pending_deletes == {"3": 1}
        assert tracked_lines(h.source(), missing, False) == [
            "1 missing item(s) not deleted yet (confirm_deletes = 2; polls missing so far): "
            "3 (1 of 2)"
        ]
        assert "3" in (await h.store.load_hashes("tickets")).hashes
        assert (await h.store.tracked_counts())["tickets"].pending_deletes == 1
        back = await h.poll()
        assert back.changes == [] and back.pending_deletes == {}
        assert "tickets" not in await h.store.tracked_counts()
        # blinking again later starts from zero: one blink never deletes
        fake.blink([3], answers=1)
        assert (await h.poll()).changes == []
        assert (await h.poll()).changes == []
        assert await h.events() == []


async def test_an_item_missing_n_polls_in_a_row_is_deleted_once(
    tmp_path: Path, blinking: tuple[BlinkingList, TestServer]
) -> None:
    """confirm_deletes = 3: the third consecutive poll without the item emits item.deleted."""
    fake, server = blinking
    async with baselined(_config(tmp_path, server, confirm_deletes=3)) as h:
        fake.remove([5, 6])
        assert _deleted(await h.poll()) == []
        assert _deleted(await h.poll()) == []
        third = await h.poll()
        assert _deleted(third) == ["5", "6"]
        assert third.pending_deletes == {}
        assert _deleted(await h.poll()) == []
        assert [e["key_text"] for e in await h.events()] == ["5", "6"]


async def test_a_changed_item_that_comes_back_is_an_update(
    tmp_path: Path, blinking: tuple[BlinkingList, TestServer]
) -> None:
    """The snapshot was kept, so an item back with new content is updated, not created."""
    fake, server = blinking
    async with baselined(_config(tmp_path, server)) as h:
        fake.blink([2], answers=1)
        await h.poll()
        fake.items[2] = {"id": 2, "name": "renamed"}
        back = await h.poll()
        assert [(c.type, c.key_text) for c in back.changes] == [("updated", "2")]


async def test_pending_deletes_wait_for_the_mass_delete_guard_too(
    tmp_path: Path, blinking: tuple[BlinkingList, TestServer]
) -> None:
    """The guard counts the deletions a poll would make after confirmation: 8 of 12 items
    gone are pending at first, then held for confirm_polls, then deleted once."""
    fake, server = blinking
    async with baselined(_config(tmp_path, server, max_deletes="50%", confirm_polls=2)) as h:
        fake.remove(list(range(1, 9)))
        pending = await h.poll()
        assert pending.result == "ok" and len(pending.pending_deletes) == 8
        held = await h.poll()
        assert held.result == "held" and held.held_polls == 1
        assert (await h.store.load_missing("tickets")) == {str(i): 1 for i in range(1, 9)}
        applied = await h.poll()
        assert applied.result == "ok" and _deleted(applied) == sorted(str(i) for i in range(1, 9))
        assert await h.store.load_missing("tickets") == {}


async def test_items_back_during_a_hold_release_it_without_deletes(
    tmp_path: Path, blinking: tuple[BlinkingList, TestServer]
) -> None:
    """A half-empty answer that is held and then recovers deletes nothing."""
    fake, server = blinking
    async with baselined(_config(tmp_path, server, max_deletes="50%", confirm_polls=3)) as h:
        fake.blink(list(range(1, 9)), answers=2)
        assert (await h.poll()).result == "ok"
        assert (await h.poll()).result == "held"
        back = await h.poll()
        assert back.result == "ok" and back.changes == []
        assert await h.store.load_missing("tickets") == {}
        assert await h.events() == []


async def test_confirm_deletes_one_deletes_at_once(
    tmp_path: Path, blinking: tuple[BlinkingList, TestServer]
) -> None:
    """The default: an item missing from a complete list is deleted by that poll."""
    fake, server = blinking
    async with baselined(_config(tmp_path, server, confirm_deletes=None)) as h:
        fake.blink([4], answers=1)
        assert _deleted(await h.poll()) == ["4"]
        assert [c.type for c in (await h.poll()).changes] == ["created"]
