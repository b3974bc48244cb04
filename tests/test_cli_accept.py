"""`pollbridge accept NAME`: apply a held source's result at its next poll."""

from __future__ import annotations

from bridge.cli import main
from bridge.store.sqlite import SQLiteStore
from tests.support.fake_apis import FakeAPI
from tests.support.servers import serve


def _state(path):
    store = SQLiteStore(path)
    store.open_sync()
    try:
        return store._get_source_state("s")
    finally:
        store.close_sync()


def test_accept_a_held_source(tmp_path, write_config, capsys):
    """A held poll stays held until `accept`; then the next `poll --commit` applies it."""
    fake = FakeAPI(count=20)
    with serve(fake) as server:
        config = write_config(
            f'[bridge]\nstate = "{tmp_path}/state.db"\n'
            f'[[sources]]\nname = "s"\nurl = "{server.url("/items")}"\nevery = "1m"\n'
            'items = "$.data[*]"\nconfirm_polls = 5\n'
        )
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


def test_accept_unknown_source_is_exit_1_naming_the_known_ones(write_config, tmp_path, capsys):
    """Naming a source the configuration does not have exits 1 with the known names."""
    config = write_config(
        f'[bridge]\nstate = "{tmp_path}/state.db"\n'
        '[[sources]]\nname = "s"\nurl = "https://a.example/x"\nevery = "1m"\n'
    )
    assert main(["accept", "nope", "--config", str(config)]) == 1
    assert "no source named 'nope' (known: s)" in capsys.readouterr().err
