"""``pollbridge check``: risky settings as typed warnings, ``--strict``, ``--json``, and the
state line without the database password."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from bridge.config import PUBLISHED_SECRETS, iter_summary, load_config, risky_settings, summary_doc
from bridge.core.signing import generate_secret
from tests.support.daemon import run_cli

ROOT = Path(__file__).resolve().parents[1]
SECRET = generate_secret()

SAFE = f"""
[bridge]
deny_private_targets = true

[[sources]]
name = "orders"
url = "https://api.example.com/orders"
every = "1m"
headers = {{ Authorization = "Bearer ${{ORDERS_TOKEN}}" }}

[[listeners]]
name = "crm"
url = "https://hooks.example.com/crm"
secret = "{SECRET}"
"""
ENV = {"ORDERS_TOKEN": "a-real-token-4f9b2c"}


@pytest.fixture(autouse=True)
def _no_bridge_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """[bridge] settings read POLLBRIDGE_* from the process environment; keep the shell's out."""
    for name in list(os.environ):
        if name.upper().startswith("POLLBRIDGE_"):
            monkeypatch.delenv(name)


def _codes(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "pollbridge.toml"
    path.write_text(text)
    return [w.code for w in risky_settings(load_config(path, ENV if env is None else env))]


def test_a_safe_configuration_has_no_warnings(tmp_path: Path) -> None:
    """https, signed, TLS verified, private targets denied, real secrets: nothing to say."""
    assert _codes(SAFE, tmp_path) == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (
            (
                'url = "https://api.example.com/orders"',
                'url = "https://api.example.com/o"\ntls_verify = false',
            ),
            "tls-verify-off",
        ),
        (
            (
                'url = "https://hooks.example.com/crm"',
                'url = "https://hooks.example.com/crm"\ntls_verify = false',
            ),
            "tls-verify-off",
        ),
        ((SECRET, next(iter(PUBLISHED_SECRETS))), "published-secret"),
        (('"Bearer ${ORDERS_TOKEN}"', '"Bearer change-me"'), "placeholder-secret"),
        (
            ('"Bearer ${ORDERS_TOKEN}"', '"Bearer ${ORDERS_TOKEN:-your-token}"'),
            "placeholder-secret",
        ),
        (("https://hooks.example.com/crm", "http://hooks.example.com/crm"), "plain-http-listener"),
        (("https://hooks.example.com/crm", "http://10.0.0.7/crm"), "plain-http-listener"),
        ((f'secret = "{SECRET}"', ""), "unsigned-listener"),
        (
            ("deny_private_targets = true", "deny_private_targets = false"),
            "private-targets-allowed",
        ),
    ],
    ids=[
        "source-tls-off",
        "listener-tls-off",
        "published-secret",
        "placeholder-token",
        "placeholder-default",
        "plain-http-public",
        "plain-http-private",
        "no-secret",
        "private-targets",
    ],
)
def test_each_risky_setting_is_one_warning(
    change: tuple[str, str], code: str, tmp_path: Path
) -> None:
    """Each risky setting gives exactly its warning."""
    old, new = change
    assert old in SAFE
    env = {} if ":-" in new else ENV  # a ${VAR:-default} shows its default only when unset
    assert _codes(SAFE.replace(old, new), tmp_path, env) == [code]


def test_loopback_listeners_are_not_risky(tmp_path: Path) -> None:
    """Plain http to this host, with private targets allowed, is a developer's normal setup."""
    text = SAFE.replace("deny_private_targets = true", "").replace(
        "https://hooks.example.com/crm", "http://127.0.0.1:8787/hooks"
    )
    assert _codes(text, tmp_path) == []


def test_a_warning_names_the_file_and_entry_it_concerns(tmp_path: Path) -> None:
    """A conf.d listener's warning names the conf.d file and the entry."""
    (tmp_path / "conf.d").mkdir()
    extra = tmp_path / "conf.d" / "late.toml"
    extra.write_text('[[listeners]]\nname = "late"\nurl = "https://h.example.com/"\n')
    (tmp_path / "pollbridge.toml").write_text(SAFE)
    (warning,) = risky_settings(load_config(tmp_path / "pollbridge.toml", ENV))
    assert (warning.code, warning.file, warning.where) == (
        "unsigned-listener",
        str(extra),
        'listeners "late" (listeners[1])',
    )
    assert str(warning).startswith(f'{extra}, listeners "late" (listeners[1]): no secret')


def test_every_secret_in_the_shipped_examples_is_known_as_published() -> None:
    """A literal secret or signing key written in config/ is in PUBLISHED_SECRETS (so `check`
    warns about it); the example no longer falls back to one."""
    pattern = re.compile(r"wh(?:sec|sk)_[A-Za-z0-9+/=]{20,}")
    files = [ROOT / "config" / "example.toml", *sorted((ROOT / "config" / "examples").iterdir())]
    shipped = {m for f in files for m in pattern.findall(f.read_text())}
    assert shipped <= PUBLISHED_SECRETS
    example = (ROOT / "config" / "example.toml").read_text()
    assert ":-whsec_" not in example and "change-me" not in example


def test_the_example_needs_its_secret_and_token(tmp_path: Path) -> None:
    """Without ORDERS_TOKEN and SHIPPING_SECRET the example refuses to load, naming both."""
    with pytest.raises(Exception, match="2 variables are not set") as info:
        load_config(ROOT / "config" / "example.toml", {"STATE_DIRECTORY": str(tmp_path)})
    assert "${ORDERS_TOKEN}" in str(info.value) and "${SHIPPING_SECRET}" in str(info.value)


# --- the check verb -----------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pollbridge.toml"
    path.write_text(text)
    return str(path)


def test_check_prints_warnings_and_strict_exits_78(tmp_path: Path) -> None:
    """`check` prints each warning and still passes; `check --strict` exits 78 (EX_CONFIG)."""
    config = _write(tmp_path, SAFE.replace(f'secret = "{SECRET}"', ""))
    res = run_cli("check", "--config", config, env=ENV)
    assert res.returncode == 0, res.stderr
    assert "warning: " in res.stdout and 'listeners "crm" (listeners[0]): no secret' in res.stdout
    assert "configuration OK (1 warning(s))" in res.stdout
    strict = run_cli("check", "--strict", "--config", config, env=ENV)
    assert strict.returncode == 78
    assert "1 warning(s), refused by --strict" in strict.stderr
    assert "configuration OK" not in strict.stdout


def test_check_strict_passes_a_safe_configuration(tmp_path: Path) -> None:
    """No warning, no failure: --strict exits 0."""
    res = run_cli("check", "--strict", "--config", _write(tmp_path, SAFE), env=ENV)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stdout


def test_check_strict_passes_the_shipped_example_with_real_secrets() -> None:
    """config/example.toml, given its token and a fresh secret, has nothing risky."""
    env = {"ORDERS_TOKEN": "tok-example-1234", "SHIPPING_SECRET": generate_secret()}
    res = run_cli("check", "--strict", "--config", str(ROOT / "config" / "example.toml"), env=env)
    assert res.returncode == 0, res.stdout + res.stderr


def test_check_json_prints_summary_and_warnings(tmp_path: Path) -> None:
    """`check --json` is one JSON document: the summary and typed warnings, secrets redacted."""
    text = SAFE.replace("https://hooks.example.com/crm", "http://hooks.example.com/crm")
    res = run_cli("check", "--json", "--config", _write(tmp_path, text), env=ENV)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [s["name"] for s in doc["sources"]] == ["orders"]
    assert doc["sources"][0]["schedule"] == "every 1m"
    assert doc["listeners"][0]["signed"] is True
    assert [w["code"] for w in doc["warnings"]] == ["plain-http-listener"]
    assert doc["warnings"][0]["where"] == 'listeners "crm" (listeners[0]), field url'
    assert ENV["ORDERS_TOKEN"] not in res.stdout and SECRET not in res.stdout


# --- the state line -----------------------------------------------------------------------------

PASSWORD = "pg-Pass@word-77"


@pytest.mark.parametrize("how", ["literal", "variable", "credential", "override"])
def test_state_password_never_appears_in_check(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PostgreSQL password of [bridge] state, however it is given, is *** in the summary,
    in the JSON summary and in anything the configuration's redactor scrubs."""
    url = f"postgresql://pb:{PASSWORD.replace('@', '%40')}@127.0.0.1:5432/pb"
    env = dict(ENV)
    state = {"literal": url, "variable": "${PG_URL}", "credential": "${PG_URL}"}.get(how, "x.db")
    if how == "variable":
        env["PG_URL"] = url
    elif how == "credential":
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds" / "PG_URL").write_text(url + "\n")
        env["CREDENTIALS_DIRECTORY"] = str(tmp_path / "creds")
    elif how == "override":
        monkeypatch.setenv("POLLBRIDGE_STATE", url)
    path = tmp_path / "pollbridge.toml"
    path.write_text(SAFE.replace("[bridge]\n", f'[bridge]\nstate = "{state}"\n'))
    config = load_config(path, env)
    assert config.state_location == url  # the store still gets the real URL
    (line,) = [x for x in iter_summary(config) if x.startswith("state:")]
    assert line == "state:  postgresql://pb:***@127.0.0.1:5432/pb"
    assert summary_doc(config)["state"] == "postgresql://pb:***@127.0.0.1:5432/pb"
    said = config.redact(f"no state yet at {url}; password {PASSWORD}")
    assert PASSWORD not in said and PASSWORD.replace("@", "%40") not in said
