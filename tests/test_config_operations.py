"""The [bridge] keys of operations: http, log_format, retention; and locating the state alone."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bridge.config import load_config, locate_state
from bridge.errors import ConfigError

# a configuration needs a source; these tests are about [bridge]
SOURCE = '[[sources]]\nname = "s"\nurl = "https://x.example/s"\nevery = "1m"\n'


def test_defaults(write_config):
    """http off, text logs, 14 days of retention."""
    config = load_config(write_config(SOURCE), env={})
    assert config.bridge.http is None and config.bridge.http_address is None
    assert config.bridge.log_format == "text"
    assert config.bridge.retention == timedelta(days=14)


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        (":9464", ("0.0.0.0", 9464)),  # noqa: S104
        ("off", None),
    ],
)
def test_http_addresses(write_config, value, address):
    """host:port, [v6]:port, :port (all interfaces) or off."""
    config = load_config(write_config(f'[bridge]\nhttp = "{value}"\n{SOURCE}'), env={})
    assert config.bridge.http_address == address


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('http = "localhost"', 'expected "host:port"'),
        ('http = "1.2.3.4:99999"', 'expected "host:port"'),
        ('log_format = "xml"', "log_format"),
        ('retention = "0s"', "must be greater than zero"),
        ('retention = "soon"', "invalid duration"),
    ],
)
def test_invalid_values_name_the_field(write_config, line, message):
    """Bad values are rejected with the [bridge] field named."""
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write_config(f"[bridge]\n{line}\n"), env={})
    assert "[bridge]" in str(info.value)


def test_retention_off_and_env_override(write_config, monkeypatch):
    """retention = "off" keeps everything; POLLBRIDGE_HTTP overrides the file."""
    path = write_config('[bridge]\nretention = "off"\nlog_format = "JSON"\n' + SOURCE)
    monkeypatch.setenv("POLLBRIDGE_HTTP", "127.0.0.1:1234")
    config = load_config(path, env={})
    assert config.bridge.retention is None
    assert config.bridge.log_format == "json"
    assert config.bridge.http_address == ("127.0.0.1", 1234)


def test_locate_state_needs_no_credentials(tmp_path, write_config):
    """The state path is found even when a source's ${VAR} is unavailable; env and
    STATE_DIRECTORY rules are those of load_config."""
    path = write_config(
        '[bridge]\nstate = "${STATE_NAME:-pb.db}"\n'
        '[[sources]]\nname = "s"\nurl = "https://x.example/${MISSING}"\nevery = "1m"\n'
    )
    assert locate_state(path, env={"STATE_DIRECTORY": str(tmp_path)}) == str(tmp_path / "pb.db")
    assert locate_state(path, env={"STATE_NAME": "/srv/x.db"}) == "/srv/x.db"
    assert locate_state(path, env={"POLLBRIDGE_STATE": "/srv/y.db"}) == "/srv/y.db"
    with pytest.raises(ConfigError, match="not found"):
        locate_state(tmp_path / "nope.toml", env={})
