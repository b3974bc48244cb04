"""`pollbridge accept NAME`: apply a held source's result at its next poll."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.cli import main
from bridge.models import SourceState
from tests.support.configs import source, write_config
from tests.support.fake_apis import FakeAPI
from tests.support.servers import serve
from tests.support.state import StateView


def _state(path: Path) -> SourceState:
    return StateView(path).sources()["s"]


def _config(tmp_path: Path, url: str, **fields: Any) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("s", url, every="1m", **fields),
        shutdown_grace=None,
    )


def test_accept_a_held_source(tmp_path, capsys):
    """A held poll stays held until `accept`; then the next `poll --commit` applies it."""
    fake = FakeAPI(count=20)
    with serve(fake) as server:
        config = _config(tmp_path, server.url("/items"), confirm_polls=5)
        assert main(["accept", "s", "--config", str(config)]) == 0
        assert "not held; nothing to accept" in capsys.readouterr().err
        assert main(["poll", "s", "--commit", "--config", str(config)]) == 0
        fake.keep({1, 2})
        assert main(["poll", "s", "--commit", "--config", str(config)]) == 0
        err = capsys.readouterr().err
        assert "held: would delete 18 of 20 items" in err
        assert "`pollbridge accept s`" in err
        assert _state(tmp_path / "state.db").held_polls == 1
        assert main(["accept", "s", "--config", str(config)]) == 0
        assert "will be applied at its next poll" in capsys.readouterr().err
        assert _state(tmp_path / "state.db").accept_requested
        assert main(["poll", "s", "--commit", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.count('"type":"item.deleted"') == 18
    state = _state(tmp_path / "state.db")
    assert state.held_reason is None and not state.accept_requested and state.item_count == 2


def test_accept_unknown_source_is_exit_1_naming_the_known_ones(tmp_path, capsys):
    """Naming a source the configuration does not have exits 1 with the known names."""
    config = _config(tmp_path, "https://a.example/x", items=None)
    assert main(["accept", "nope", "--config", str(config)]) == 1
    assert "no source named 'nope' (known: s)" in capsys.readouterr().err
