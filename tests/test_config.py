"""Configuration loading: TOML, interpolation, conf.d merging and validation errors."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.config import DEFAULT_CONFIG_PATH, iter_summary, load_config, resolve_config_path
from bridge.core.signing import decode_secret, generate_secret
from bridge.errors import ConfigError

CASES: list[dict[str, Any]] = tomllib.loads(
    (Path(__file__).parent / "data" / "config_cases.toml").read_text()
)["case"]

SECRET = "whsec_" + "QUJD" * 8  # 24 bytes of "ABC"

VALID = f"""
[bridge]
state = "pollbridge.db"
log_level = "WARNING"
shutdown_grace = "3s"

[[sources]]
name = "orders"
url = "https://api.example.com/orders"
every = "30s"
jitter = "2s"
items = "$.data[*]"
key = "$.id"
ignore = ["$.updated_at"]
headers = {{ Authorization = "Bearer ${{API_TOKEN}}" }}
params = {{ status = "open", limit = 100 }}

[[sources]]
name = "invoices"
url = "https://api.example.com/invoices"
cron = "*/5 * * * *"
method = "POST"
body = {{ query = "all" }}
key = ["$.org", "$.number"]
fields = ["$.org", "$.number", "$.total"]
max_bytes = "1MiB"

[[listeners]]
name = "crm"
url = "https://hooks.example.com/crm"
sources = ["orders"]
events = ["created", "deleted"]
secret = "{SECRET}"
retry = ["1s", "1m"]

[[listeners]]
name = "audit"
url = "http://127.0.0.1:9000/audit"
"""

SOURCE = """
[[sources]]
name = "{name}"
url = "https://api.example.com/{name}"
every = "30s"
"""

LISTENER = """
[[listeners]]
name = "{name}"
url = "{url}"
"""

WriteFiles = Callable[..., Path]


@pytest.fixture(autouse=True)
def _no_bridge_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """[bridge] settings read POLLBRIDGE_* from the process environment; keep the shell's out."""
    for name in list(os.environ):
        if name.upper().startswith("POLLBRIDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def write_files(tmp_path: Path) -> WriteFiles:
    """Write pollbridge.toml (and conf.d files given as name=text) under tmp_path."""

    def write(main: str, **conf_d: str) -> Path:
        path = tmp_path / "pollbridge.toml"
        path.write_text(main)
        if conf_d:
            (tmp_path / "conf.d").mkdir(exist_ok=True)
            for name, text in conf_d.items():
                (tmp_path / "conf.d" / f"{name}.toml").write_text(text)
        return path

    return write


def load_error(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, {} if env is None else env)
    return info.value


# --- a valid configuration -----------------------------------------------------------------


def test_valid_example_loads_into_typed_objects(write_files: WriteFiles, tmp_path: Path) -> None:
    """Every documented key is parsed into its typed, validated form."""
    path = write_files(VALID)
    config = load_config(path, {"API_TOKEN": "tok-123", "STATE_DIRECTORY": str(tmp_path / "st")})

    assert config.files == (str(path),)
    assert config.bridge.log_level == "warning"
    assert config.bridge.shutdown_grace == timedelta(seconds=3)
    assert config.state_location == str(tmp_path / "st" / "pollbridge.db")

    orders, invoices = config.sources
    assert orders.every == timedelta(seconds=30)
    assert orders.interval_s == 30.0
    assert orders.jitter == timedelta(seconds=2)
    assert orders.headers == {"Authorization": "Bearer tok-123"}
    assert orders.params == {"status": "open", "limit": 100}
    assert orders.spec.items.text == "$.data[*]"
    assert [p.text for p in orders.ignore_paths] == ["$.updated_at"]
    assert invoices.cron == "*/5 * * * *"
    assert invoices.interval_s is None
    assert invoices.body == {"query": "all"}
    assert [p.text for p in invoices.spec.key] == ["$.org", "$.number"]
    assert invoices.max_bytes == 1024 * 1024

    crm, audit = config.listeners
    assert crm.signing_keys == [decode_secret(SECRET)]
    assert crm.retry_s == [1.0, 60.0]
    assert audit.sources is None
    assert audit.events == ["created", "updated", "deleted"]
    assert audit.signing_keys == []
    assert [(r.name, r.sources, r.events) for r in config.routes()] == [
        ("crm", frozenset({"orders"}), frozenset({"created", "deleted"})),
        ("audit", None, None),  # events left out: every event, named ones too
    ]
    assert config.source("invoices") is invoices


def test_secrets_and_interpolated_values_are_redacted(write_files: WriteFiles) -> None:
    """Secrets and every value taken from the environment are replaced by *** in output."""
    config = load_config(write_files(VALID), {"API_TOKEN": "tok-123"})
    text = config.redact(f"GET with Bearer tok-123 signed by {SECRET}")
    assert text == "GET with Bearer *** signed by ***"


def test_plain_interpolated_values_are_not_redacted(write_files: WriteFiles) -> None:
    """Only values feeding secrets, auth or headers count as secrets; a plain host does not."""
    path = write_files(SOURCE.format(name="s").replace("api.example.com/s", "${HOST}/s"))
    config = load_config(path, {"HOST": "api.internal"})
    assert config.sources[0].url == "https://api.internal/s"
    assert config.redact("https://api.internal/s") == "https://api.internal/s"


def test_unknown_source_lookup_names_the_known_ones(write_files: WriteFiles) -> None:
    """Config.source() on an unknown name raises ConfigError listing the known names."""
    config = load_config(write_files(VALID), {"API_TOKEN": "t"})
    with pytest.raises(ConfigError, match=r"no source named 'nope' \(known: orders, invoices\)"):
        config.source("nope")


def test_defaults_of_a_minimal_file(write_files: WriteFiles) -> None:
    """A file with one source and nothing else gives defaults: no listeners, info logging."""
    config = load_config(write_files(SOURCE.format(name="s")), {})
    assert (config.listeners, config.bridge.log_level) == ([], "info")


@pytest.mark.parametrize(
    "text",
    ["", "[bridge]\nlog_level = 'debug'\n", LISTENER.format(name="l", url="https://h.example")],
    ids=["empty", "bridge-only", "listener-only"],
)
def test_a_configuration_without_sources_is_refused(text: str, write_files: WriteFiles) -> None:
    """No [[sources]] means nothing would ever run: refused at load (so at start and reload)."""
    path = write_files(text)
    error = load_error(path)
    assert error.file == str(path)
    assert "no sources: there is no [[sources]] table in this file" in str(error)


def test_sources_may_come_from_conf_d_alone(write_files: WriteFiles, tmp_path: Path) -> None:
    """A main file with only [bridge] is fine when conf.d holds the sources; an empty conf.d
    is named in the refusal."""
    config = load_config(write_files("", extra=SOURCE.format(name="s")), {})
    assert [s.name for s in config.sources] == ["s"]
    (tmp_path / "conf.d" / "extra.toml").write_text("")
    assert "nor in conf.d/*.toml" in str(load_error(tmp_path / "pollbridge.toml"))


# --- validation errors ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_invalid_configuration_names_file_entry_and_field(
    case: dict[str, Any], write_files: WriteFiles
) -> None:
    """Each kind of mistake raises ConfigError naming the file, the entry, the field and why."""
    path = write_files(case["toml"])
    error = load_error(path)
    message = str(error)
    assert message.startswith(f"{path}: ")
    assert error.file == str(path)
    missing = [fragment for fragment in case["expect"] if fragment not in message]
    assert not missing, f"{missing} not in:\n{message}"
    said = [fragment for fragment in case.get("absent", []) if fragment in message]
    assert not said, f"{said} should not be in:\n{message}"


def test_every_problem_is_reported_at_once(write_files: WriteFiles) -> None:
    """Several mistakes give one error listing each of them, one per line."""
    path = write_files(
        SOURCE.format(name="orders").replace('every = "30s"', 'every = "x"\nurl2 = 1')
        + LISTENER.format(name="hook", url="ftp://x")
    )
    message = str(load_error(path))
    assert "3 problem(s):" in message
    assert 'sources "orders" (sources[0]), field every: invalid duration' in message
    assert 'sources "orders" (sources[0]), field url2: unknown key' in message
    assert 'listeners "hook" (listeners[0]), field url: expected an http' in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A configuration path that does not exist names itself, how to give another, and how to
    write one."""
    error = load_error(tmp_path / "absent.toml")
    assert str(error).startswith(str(tmp_path / "absent.toml"))
    assert "not found (give --config PATH or set POLLBRIDGE_CONFIG)" in str(error)
    assert "`pollbridge init PATH` writes a commented starter" in str(error)


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    """Pointing --config at a directory is reported as such."""
    assert "expected a TOML file, found a directory" in str(load_error(tmp_path))


# --- environment interpolation -------------------------------------------------------------


def test_unset_variable_names_file_entry_and_field(write_files: WriteFiles) -> None:
    """${VAR} with VAR unset is an error naming the file, where it is used and the fix."""
    path = write_files(VALID)
    error = load_error(path, {})
    assert error.file == str(path)
    assert error.where == 'sources "orders" (sources[0]), field headers.Authorization'
    assert str(error) == (
        f'{path}: sources "orders" (sources[0]), field headers.Authorization: '
        "${API_TOKEN} is not set in the environment "
        "(nor in $CREDENTIALS_DIRECTORY); set it, or write ${API_TOKEN:-default}"
    )


def test_every_unset_variable_is_named_at_once(write_files: WriteFiles) -> None:
    """Several unset variables are listed together, each with where it is used, so a new user
    does not discover them one run at a time."""
    path = write_files(
        VALID
        + """
[[listeners]]
name = "crm"
url = "${CRM_URL}"
secret = "${CRM_SECRET}"
"""
    )
    error = load_error(path, {})
    assert error.file == str(path)
    assert "3 variables are not set in the environment" in str(error)
    assert '${API_TOKEN}: sources "orders" (sources[0]), field headers.Authorization' in str(error)
    assert "${CRM_URL}: listeners " in str(error) and "field url" in str(error)
    assert "${CRM_SECRET}: listeners " in str(error) and "field secret" in str(error)


@pytest.mark.parametrize(
    ("template", "env", "expected"),
    [
        ("${HOST:-api.example.com}", {}, "api.example.com"),
        ("${HOST:-api.example.com}", {"HOST": "env.example.com"}, "env.example.com"),
        ("${HOST:-}x.example.com", {}, "x.example.com"),
        ("${HOST}", {"HOST": "env.example.com"}, "env.example.com"),
        ("a$${HOST}.example.com", {"HOST": "ignored"}, "a${HOST}.example.com"),
        ("${A}.${B}.com", {"A": "x", "B": "y"}, "x.y.com"),
    ],
)
def test_interpolation(
    template: str, env: dict[str, str], expected: str, write_files: WriteFiles
) -> None:
    """${VAR} takes the environment, ${VAR:-default} falls back, $$ is a literal dollar."""
    path = write_files(SOURCE.format(name="s").replace("api.example.com/s", template))
    assert load_config(path, env).sources[0].url == f"https://{expected}"


def test_credentials_directory_file_wins_over_environment(
    write_files: WriteFiles, tmp_path: Path
) -> None:
    """A file named VAR in $CREDENTIALS_DIRECTORY beats $VAR; its trailing newline is dropped."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "API_TOKEN").write_text("from-file\n")
    env = {"API_TOKEN": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    config = load_config(write_files(VALID), env)
    assert config.sources[0].headers == {"Authorization": "Bearer from-file"}
    assert config.redact("from-file") == "***"


def test_credentials_directory_falls_back_to_environment(
    write_files: WriteFiles, tmp_path: Path
) -> None:
    """A variable with no credential file is taken from the environment."""
    env = {"API_TOKEN": "from-env", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    config = load_config(write_files(VALID), env)
    assert config.sources[0].headers == {"Authorization": "Bearer from-env"}


# --- [bridge] overrides from POLLBRIDGE_* ------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "field", "expected"),
    [
        ("POLLBRIDGE_LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("POLLBRIDGE_STATE", "/var/lib/pb/other.db", "state", "/var/lib/pb/other.db"),
        ("POLLBRIDGE_SHUTDOWN_GRACE", "1m", "shutdown_grace", timedelta(minutes=1)),
    ],
)
def test_environment_overrides_bridge_table(
    var: str,
    value: str,
    field: str,
    expected: object,
    write_files: WriteFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POLLBRIDGE_<FIELD> in the environment beats the [bridge] table's value."""
    monkeypatch.setenv(var, value)
    monkeypatch.setenv("API_TOKEN", "t")
    config = load_config(write_files(VALID))
    assert getattr(config.bridge, field) == expected


@pytest.mark.parametrize(
    ("var", "value", "field", "expected"),
    [
        ("POLLBRIDGE_DENY_PRIVATE_TARGETS", "true", "deny_private_targets", True),
        ("POLLBRIDGE_PER_HOST_CONCURRENCY", "4", "per_host_concurrency", 4),
        ("POLLBRIDGE_ANALYSIS_WORKERS", "0", "analysis_workers", 0),
        ("POLLBRIDGE_ANALYSIS_WORKER_MIN_BYTES", "8MiB", "analysis_worker_min_bytes", 8 << 20),
    ],
)
def test_environment_overrides_are_read_as_their_type(
    var: str,
    value: str,
    field: str,
    expected: object,
    write_files: WriteFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The environment holds text: strict [bridge] fields still take "true" and "4" from it."""
    monkeypatch.setenv(var, value)
    assert getattr(load_config(write_files(SOURCE.format(name="s")), {}).bridge, field) == expected


def test_environment_override_of_the_wrong_type_names_the_variable(
    write_files: WriteFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POLLBRIDGE_PER_HOST_CONCURRENCY=many is refused, naming the variable."""
    monkeypatch.setenv("POLLBRIDGE_PER_HOST_CONCURRENCY", "many")
    message = str(load_error(write_files(SOURCE.format(name="s"))))
    assert "$POLLBRIDGE_PER_HOST_CONCURRENCY (overrides [bridge] per_host_concurrency)" in message
    assert 'expected a whole number, got "many"' in message


def test_bad_environment_override_is_a_config_error(
    write_files: WriteFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invalid POLLBRIDGE_LOG_LEVEL is reported against the variable, not the file (which
    may not even have the key), and says which [bridge] key it overrides."""
    monkeypatch.setenv("POLLBRIDGE_LOG_LEVEL", "chatty")
    message = str(load_error(write_files('[bridge]\nlog_level = "info"\n')))
    assert "$POLLBRIDGE_LOG_LEVEL (overrides [bridge] log_level)" in message
    assert "got 'chatty'" in message
    assert "field log_level" not in message


def test_bad_bridge_key_in_the_file_is_reported_against_the_file(
    write_files: WriteFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an override, a bad [bridge] value names the table and the field."""
    monkeypatch.setenv("POLLBRIDGE_LOG_LEVEL", "debug")  # another field's override is no excuse
    message = str(load_error(write_files('[bridge]\nshutdown_grace = "soon"\n')))
    assert "[bridge], field shutdown_grace: invalid duration 'soon'" in message


# --- conf.d --------------------------------------------------------------------------------


def test_conf_d_files_are_merged_in_name_order(write_files: WriteFiles, tmp_path: Path) -> None:
    """Sources and listeners from conf.d/*.toml are appended, files sorted by name."""
    path = write_files(
        SOURCE.format(name="main"),
        **{
            "20-b": SOURCE.format(name="b"),
            "10-a": SOURCE.format(name="a")
            + LISTENER.format(name="hook", url="https://h.example")
            + 'sources = ["main", "b"]\n',
        },
    )
    (tmp_path / "conf.d" / "ignored.txt").write_text("not toml")
    config = load_config(path, {})
    assert [s.name for s in config.sources] == ["main", "a", "b"]
    assert [lst.name for lst in config.listeners] == ["hook"]
    assert config.listeners[0].sources == ["main", "b"]
    assert config.files == (
        str(path),
        str(tmp_path / "conf.d" / "10-a.toml"),
        str(tmp_path / "conf.d" / "20-b.toml"),
    )


@pytest.mark.parametrize(
    ("main", "extra", "kind", "name"),
    [
        (SOURCE.format(name="orders"), SOURCE.format(name="orders"), "source", "orders"),
        (
            LISTENER.format(name="hook", url="https://a.example"),
            LISTENER.format(name="hook", url="https://b.example"),
            "listener",
            "hook",
        ),
    ],
)
def test_duplicate_across_files_names_both_files(
    main: str, extra: str, kind: str, name: str, write_files: WriteFiles, tmp_path: Path
) -> None:
    """A name defined in the main file and in conf.d is refused, naming both files."""
    path = write_files(main, extra=extra)
    extra_path = tmp_path / "conf.d" / "extra.toml"
    error = load_error(path)
    assert error.file == str(extra_path)
    assert f'duplicate {kind} name "{name}": defined in {path} and in {extra_path}' in str(error)


def test_duplicate_between_two_conf_d_files_names_both(
    write_files: WriteFiles, tmp_path: Path
) -> None:
    """Two conf.d files defining the same source are both named."""
    path = write_files("", a=SOURCE.format(name="x"), b=SOURCE.format(name="x"))
    a, b = tmp_path / "conf.d" / "a.toml", tmp_path / "conf.d" / "b.toml"
    assert f"defined in {a} and in {b}" in str(load_error(path))


@pytest.mark.parametrize(
    ("extra", "entry", "field"),
    [
        (SOURCE.format(name="late").replace('"30s"', '"soon"'), 'sources "late"', "field every"),
        (LISTENER.format(name="late", url="gopher://x"), 'listeners "late"', "field url"),
    ],
)
def test_error_in_conf_d_names_that_file(
    extra: str, entry: str, field: str, write_files: WriteFiles, tmp_path: Path
) -> None:
    """A validation error in a conf.d entry names the conf.d file it came from."""
    path = write_files(SOURCE.format(name="orders"), late=extra)
    message = str(load_error(path))
    assert f"{tmp_path / 'conf.d' / 'late.toml'}, {entry}" in message
    assert field in message


def test_unknown_source_in_a_conf_d_listener_names_that_file(
    write_files: WriteFiles, tmp_path: Path
) -> None:
    """A conf.d listener naming an unknown source is blamed on its conf.d file, not the main one."""
    late = LISTENER.format(name="late", url="https://h.example") + 'sources = ["nosuch"]\n'
    path = write_files(SOURCE.format(name="orders"), late=late)
    message = str(load_error(path))
    assert (
        f'{tmp_path / "conf.d" / "late.toml"}, listeners "late" (listeners[0]), field sources: '
        "unknown source 'nosuch' (known: orders)"
    ) in message


def test_conf_d_may_not_hold_bridge_settings(write_files: WriteFiles, tmp_path: Path) -> None:
    """[bridge] in a conf.d file is refused, pointing at the main file."""
    path = write_files("", extra='[bridge]\nlog_level = "debug"\n')
    error = load_error(path)
    assert error.file == str(tmp_path / "conf.d" / "extra.toml")
    assert (
        f"may hold only [[sources]] and [[listeners]]; found ['bridge'] (put [bridge] settings in {path})"
        in str(error)
    )


def test_listener_in_main_file_may_name_source_from_conf_d(write_files: WriteFiles) -> None:
    """Cross-references are checked after merging, so files may refer to each other."""
    main = LISTENER.format(name="hook", url="https://h.example") + 'sources = ["remote"]\n'
    config = load_config(write_files(main, remote=SOURCE.format(name="remote")), {})
    assert config.listeners[0].sources == ["remote"]


# --- which file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        ("/a.toml", {"POLLBRIDGE_CONFIG": "/b.toml"}, Path("/a.toml")),
        (None, {"POLLBRIDGE_CONFIG": "/b.toml"}, Path("/b.toml")),
        (None, {"POLLBRIDGE_CONFIG": ""}, DEFAULT_CONFIG_PATH),
        (None, {}, DEFAULT_CONFIG_PATH),
    ],
)
def test_resolve_config_path(explicit: str | None, env: dict[str, str], expected: Path) -> None:
    """--config beats $POLLBRIDGE_CONFIG, which beats /etc/pollbridge/pollbridge.toml."""
    assert resolve_config_path(explicit, env) == expected


def test_load_config_uses_pollbridge_config_variable(write_files: WriteFiles) -> None:
    """Without an explicit path, the file named by $POLLBRIDGE_CONFIG is loaded."""
    path = write_files(SOURCE.format(name="orders"))
    assert load_config(None, {"POLLBRIDGE_CONFIG": str(path)}).files == (str(path),)


def test_generated_secret_is_accepted(write_files: WriteFiles) -> None:
    """A secret from `pollbridge secret` validates as a listener secret."""
    secret = generate_secret()
    text = (
        SOURCE.format(name="s")
        + LISTENER.format(name="hook", url="https://h.example")
        + f'secret = "{secret}"\n'
    )
    config = load_config(write_files(text), {})
    assert config.listeners[0].signing_keys == [decode_secret(secret)]


def test_summary_notes_sources_that_go_nowhere(tmp_path: Path) -> None:
    """`check` still passes, but notes a source no listener takes, or a config without any."""
    two = """
[[sources]]
name = "a"
url = "https://api.example.com/a"
every = "1m"
[[sources]]
name = "b"
url = "https://api.example.com/b"
every = "1m"
"""
    path = tmp_path / "p.toml"
    path.write_text(two)
    assert "note: no [[listeners]]: changes are recorded, but sent nowhere" in list(
        iter_summary(load_config(path, {}))
    )
    path.write_text(two + '[[listeners]]\nname = "l"\nurl = "https://h.example.com/"\n')
    assert not [line for line in iter_summary(load_config(path, {})) if line.startswith("note")]
    path.write_text(two + '[[listeners]]\nname = "l"\nurl = "https://h/"\nsources = ["a"]\n')
    notes = [line for line in iter_summary(load_config(path, {})) if line.startswith("note")]
    assert notes == [
        "note: no listener takes source(s) b: their changes are recorded, but sent nowhere"
    ]
    path.write_text("")  # no sources at all: refused by the loader, see above
    with pytest.raises(ConfigError, match="no sources"):
        load_config(path, {})


def test_summary_names_a_source_format_other_than_json(tmp_path: Path) -> None:
    """`check` shows that a source is read as a feed, CSV, ... (JSON, the default, goes unsaid)."""
    path = tmp_path / "p.toml"
    path.write_text(
        '[[sources]]\nname = "rel"\nurl = "https://x.example/r.atom"\nevery = "15m"\n'
        'format = "rss"\n'
    )
    (line,) = [x for x in iter_summary(load_config(path, {})) if x.startswith("  - rel:")]
    assert "every 15m, format rss, items $[*]" in line


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("analysis_workers = -1", "analysis_workers"),
        ("analysis_workers = 2.5", "analysis_workers"),
        ('analysis_worker_min_bytes = "lots"', "invalid size 'lots'"),
    ],
)
def test_analysis_settings_are_checked(write_files: WriteFiles, text: str, problem: str) -> None:
    """A negative worker count or an unreadable size is refused at load, naming the key."""
    message = str(load_error(write_files(f"[bridge]\n{text}\n" + SOURCE.format(name="s"))))
    assert problem in message
