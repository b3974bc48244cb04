"""The one-daemon lock of a SQLite state belongs to the database file, not to a path."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from bridge.errors import StoreError
from bridge.store import claim_state_lock
from bridge.store.sqlite import SQLiteStore


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_another_path_to_the_same_file_is_the_same_lock(state: Path, tmp_path: Path, link: str):
    """A second daemon that reaches the state through a symlink or a hard link is refused."""
    other = tmp_path / "elsewhere" / "other.db"
    other.parent.mkdir()
    if link == "symlink":
        other.symlink_to(state)
    else:
        os.link(state, other)
    held = claim_state_lock(str(state))
    assert held is not None
    try:
        with pytest.raises(StoreError, match=r"another pollbridge daemon .*is using this state"):
            claim_state_lock(str(other))
    finally:
        os.close(held)
    again = claim_state_lock(str(other))  # free again once the first one stopped
    assert again is not None
    os.close(again)


def test_a_symlinked_second_daemon_is_told_the_holders_pid(state: Path, tmp_path: Path):
    """Through a symlink the refused daemon still names the pid holding the state."""
    link = tmp_path / "link.db"
    link.symlink_to(state)
    held = claim_state_lock(str(state))
    assert held is not None
    try:
        with pytest.raises(StoreError, match=rf"another pollbridge daemon \(pid {os.getpid()}\)"):
            claim_state_lock(str(link))
    finally:
        os.close(held)


def test_an_older_daemon_holding_the_lock_file_is_respected(state: Path):
    """A pollbridge from before this lock held only ``<state>.lock``: it still keeps us out."""
    fd = os.open(f"{state}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(StoreError, match="another pollbridge daemon"):
            claim_state_lock(str(state))
    finally:
        os.close(fd)
    held = claim_state_lock(str(state))
    assert held is not None
    os.close(held)


async def test_the_store_works_under_its_own_lock(tmp_path: Path):
    """Locking a database that does not exist yet creates it private, and SQLite opens it."""
    path = tmp_path / "new" / "state.db"
    held = claim_state_lock(str(path))
    assert held is not None
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        store = SQLiteStore(path)
        await store.open()
        try:
            await store.update_source_state("s", item_count=3)
            state = await store.get_source_state("s")
            assert state is not None and state.item_count == 3
        finally:
            await store.close()
    finally:
        os.close(held)


def test_no_lock_where_instances_share_or_nothing_persists():
    """PostgreSQL shares the work between instances, and memory is private: no file lock."""
    assert claim_state_lock("postgresql://u@h/db") is None
    assert claim_state_lock("memory:") is None
