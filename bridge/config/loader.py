"""Loading: which file, TOML, ``${VAR}`` and ``$CREDENTIALS_DIRECTORY``, conf.d, the
``POLLBRIDGE_<FIELD>`` overrides and where the state lives.

The file is ``--config PATH``, else ``$POLLBRIDGE_CONFIG``, else ``/etc/pollbridge/pollbridge.toml``;
every ``conf.d/*.toml`` beside it is merged in (sources and listeners appended).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bridge.config.messages import (
    format_validation,
    no_sources,
    readable_where,
    unset_variable,
    unset_variables,
)
from bridge.config.schema import BridgeSettings, Config
from bridge.config.sensitive import SECRET_PLACE, build_redactor
from bridge.core.redaction import Redactor
from bridge.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/pollbridge/pollbridge.toml")
_TABLES = ("sources", "listeners")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def resolve_config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """``--config``, else ``$POLLBRIDGE_CONFIG``, else the system default."""
    if explicit:
        return Path(explicit)
    if env.get("POLLBRIDGE_CONFIG"):
        return Path(env["POLLBRIDGE_CONFIG"])
    return DEFAULT_CONFIG_PATH


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read, interpolate, merge and validate the configuration; raise ConfigError on any problem.

    A configuration without any source is refused: nothing would ever run (and a reload to
    one would silently drop every source and listener).
    """
    env = os.environ if env is None else env
    main_path = resolve_config_path(path, env)
    main_file = str(main_path)
    sensitive: set[str] = set()
    data = _interpolate_file(main_path, env, sensitive)
    files = [main_file]
    origin_of: dict[tuple[str, str], str] = {}
    for table, entry in _named_entries(data):
        origin_of[(table, entry)] = main_file
    conf_d = main_path.parent / "conf.d"
    if conf_d.is_dir():
        for extra_path in sorted(conf_d.glob("*.toml")):
            extra = _interpolate_file(extra_path, env, sensitive)
            for table, name in _named_entries(extra):
                if (table, name) in origin_of:
                    raise ConfigError(
                        f'duplicate {table[:-1]} name "{name}": defined in '
                        f"{origin_of[(table, name)]} and in {extra_path}",
                        file=str(extra_path),
                    )
                origin_of[(table, name)] = str(extra_path)
            _merge(data, extra, main_file, str(extra_path))
            files.append(str(extra_path))
    _check_duplicates(data, main_file)
    _resolve_template_files(data, origin_of, main_path)
    _check_top_level(data, main_file)
    # The file each entry came from, named in errors only when it is a conf.d file.
    entry_origin = {
        table: [_origin(origin_of, table, e, main_file) for e in data[table]]
        for table in _TABLES
        if isinstance(data.get(table), list)
    }
    # BridgeSettings is validated on its own, so its error locations lack the table name.
    loc_prefix: tuple[str, ...] = ("bridge",)
    interpolated = Redactor(sensitive)
    try:
        bridge = BridgeSettings(**data.get("bridge", {}))
        loc_prefix = ()
        config = Config(
            bridge=bridge,
            sources=data.get("sources", []),
            listeners=data.get("listeners", []),
            hosts=data.get("hosts", []),
        )
    except ValidationError as exc:
        # an error may quote the value it refused, and that value may be an interpolated secret
        detail = format_validation(exc, data, entry_origin, loc_prefix, _bridge_env_overrides())
        raise ConfigError(
            f"{exc.error_count()} problem(s):\n  {interpolated.redact(detail)}", file=main_file
        ) from None
    except ValueError as exc:
        raise ConfigError(interpolated.redact(str(exc)), file=main_file) from None
    if not config.sources:
        raise ConfigError(no_sources(conf_d.is_dir()), file=main_file)
    state_location = resolve_state(config.bridge.state, env)
    redactor = build_redactor(config, sensitive, state_location)
    config.bind_origin(files, origin_of, redactor, state_location)
    return config


def locate_state(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Where the state lives, read from the main file's ``[bridge] state`` alone.

    The inspection commands use this instead of :func:`load_config` so that they work where
    the sources' credentials are not available (an operator's shell, not the unit) and while
    a broken configuration is being fixed.
    """
    env = os.environ if env is None else env
    if env.get("POLLBRIDGE_STATE"):
        return resolve_state(env["POLLBRIDGE_STATE"], env)
    main_path = resolve_config_path(path, env)
    data = read_toml(main_path)
    bridge = data.get("bridge", {})
    state = bridge.get("state", BridgeSettings.model_fields["state"].default)
    if not isinstance(state, str):
        raise ConfigError(
            "must be a string (a file path or a database URL)",
            file=str(main_path),
            where="[bridge] state",
        )
    state = _interpolate(state, env, "bridge.state", str(main_path), set())
    return resolve_state(state, env)


def resolve_state(state: str, env: Mapping[str, str]) -> str:
    """A database URL as it is; a relative file under ``$STATE_DIRECTORY`` (else the cwd)."""
    if "://" in state:
        return state
    path = Path(state).expanduser()
    if not path.is_absolute():
        base = env.get("STATE_DIRECTORY", "").split(":")[0]
        path = Path(base) / path if base else Path.cwd() / path
    return str(path)


# --- files -----------------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML; every way of failing to read it is a ConfigError naming it."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(
            "configuration file not found (give --config PATH or set POLLBRIDGE_CONFIG); "
            "`pollbridge init PATH` writes a commented starter",
            file=str(path),
        ) from exc
    except PermissionError as exc:
        raise ConfigError(
            "configuration file is not readable (permission denied)", file=str(path)
        ) from exc
    except IsADirectoryError as exc:
        raise ConfigError("expected a TOML file, found a directory", file=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid UTF-8: {exc}", file=str(path)) from exc


def _named_entries(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for table in _TABLES:
        entries = data.get(table)
        for entry in entries if isinstance(entries, list) else []:
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str):
                out.append((table, name))
    return out


def _origin(origin_of: Mapping[tuple[str, str], str], table: str, entry: Any, main: str) -> str:
    if not isinstance(entry, dict):
        return ""
    found = origin_of.get((table, str(entry.get("name"))), "")
    return "" if found == main else found


def _merge(main: dict[str, Any], extra: dict[str, Any], main_file: str, extra_file: str) -> None:
    for table in _TABLES:
        if table in extra:
            if not isinstance(extra[table], list):
                raise ConfigError(
                    f"'{table}' must be an array of tables ([[{table}]])", file=extra_file
                )
            main.setdefault(table, []).extend(extra[table])
    unknown = set(extra) - set(_TABLES)
    if unknown:
        raise ConfigError(
            f"a conf.d file may hold only [[sources]] and [[listeners]]; found {sorted(unknown)} "
            f"(put [bridge] settings in {main_file})",
            file=extra_file,
        )


def _check_top_level(data: Mapping[str, Any], file: str) -> None:
    unknown_top = set(data) - {"bridge", "sources", "listeners", "hosts"}
    if unknown_top:
        raise ConfigError(
            f"unknown top-level table(s) {sorted(unknown_top)}; expected [bridge], [[sources]], "
            "[[listeners]], [[hosts]]",
            file=file,
        )
    if "hosts" in data and not isinstance(data["hosts"], list):
        raise ConfigError("'hosts' must be an array of tables ([[hosts]])", file=file)
    if not isinstance(data.get("bridge", {}), dict):
        raise ConfigError("[bridge] must be a table", file=file)


def _check_duplicates(data: Mapping[str, Any], file: str) -> None:
    for table in _TABLES:
        entries = data.get(table)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise ConfigError(f"'{table}' must be an array of tables ([[{table}]])", file=file)
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str):
                if name in seen:
                    raise ConfigError(
                        f'duplicate name "{name}" ({table}[{seen[name]}] and {table}[{i}]); '
                        "names must be unique",
                        file=file,
                        where=f"{table}[{i}]",
                    )
                seen[name] = i


def _resolve_template_files(
    data: Mapping[str, Any], origin_of: Mapping[tuple[str, str], str], main_path: Path
) -> None:
    """Make each relative ``template_file`` relative to the file that names it."""
    entries = data.get("listeners")
    if not isinstance(entries, list):
        return
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("template_file"), str):
            continue
        path = Path(entry["template_file"]).expanduser()
        if not path.is_absolute():
            origin = Path(origin_of.get(("listeners", str(entry.get("name"))), str(main_path)))
            path = origin.parent / path
        entry["template_file"] = str(path)


def _bridge_env_overrides() -> dict[str, str]:
    """[bridge] field -> the ``POLLBRIDGE_<FIELD>`` variable that sets it (pydantic-settings
    reads ``os.environ``, matching names case-insensitively)."""
    present = {name.upper(): name for name in os.environ}
    return {
        field: present[f"POLLBRIDGE_{field.upper()}"]
        for field in BridgeSettings.model_fields
        if f"POLLBRIDGE_{field.upper()}" in present
    }


# --- ${VAR} ----------------------------------------------------------------------------------


def _lookup(name: str, env: Mapping[str, str]) -> str | None:
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        path = Path(cred_dir) / name
        if path.is_file():
            return path.read_text().rstrip("\r\n")
    return env.get(name)


def _interpolate(
    value: Any,
    env: Mapping[str, str],
    where: str,
    file: str,
    sensitive: set[str],
    root: Any = None,
    missing: list[tuple[str, str]] | None = None,
) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` replaced throughout ``value``. An unset variable
    raises ConfigError, or with ``missing`` is collected there as (name, where) so that every
    missing variable can be named at once."""
    root = value if root is None else root
    if isinstance(value, dict):
        return {
            k: _interpolate(v, env, f"{where}.{k}" if where else k, file, sensitive, root, missing)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(v, env, f"{where}[{i}]", file, sensitive, root, missing)
            for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or "$" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        found = _lookup(name, env)
        if found is None:
            if default is None and missing is not None:
                missing.append((name, readable_where(where, root)))
                return ""
            if default is None:
                raise ConfigError(
                    unset_variable(name), file=file, where=readable_where(where, root)
                )
            return default
        if found and SECRET_PLACE.search(where):
            sensitive.add(found)
        return found

    return _VAR.sub(repl, value)


def _interpolate_file(path: Path, env: Mapping[str, str], sensitive: set[str]) -> Any:
    """The file's TOML with its variables replaced; every unset one is named in one error."""
    missing: list[tuple[str, str]] = []
    data = _interpolate(read_toml(path), env, "", str(path), sensitive, missing=missing)
    if len(missing) == 1:
        name, where = missing[0]
        raise ConfigError(unset_variable(name), file=str(path), where=where)
    if missing:
        raise ConfigError(unset_variables(missing), file=str(path))
    return data
