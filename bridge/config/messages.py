"""Error text: pydantic's validation errors said in the configuration's own words.

A message names the file (when the entry came from a conf.d file), the entry
(``sources "orders" (sources[0])``), the field, and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from bridge.config.fields import toml_value
from bridge.config.sources import AUTH_KINDS, PAGINATE_KINDS

_TAGGED: dict[str, tuple[str, ...]] = {"paginate": PAGINATE_KINDS, "auth": AUTH_KINDS}

# What a strict type expects, for "expected ..., got ..." instead of "Input should be ...".
_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "an array",
    "dict_type": "a table",
    "timedelta_type": 'a duration such as "30s"',
}

_ENTRY_PATH = re.compile(r"^(sources|listeners|hosts)\[(\d+)\]\.?(.*)$")


class EntryProblem(ValueError):
    """A check across entries failed at one entry's field; the loader names its file."""

    def __init__(self, table: str, index: int, field: str, reason: str):
        self.table = table
        self.index = index
        self.field = field
        self.reason = reason
        super().__init__(reason)


def unset_variable(name: str) -> str:
    """The message for one ``${VAR}`` that has no value."""
    return (
        f"${{{name}}} is not set in the environment (nor in $CREDENTIALS_DIRECTORY); "
        f"set it, or write ${{{name}:-default}}"
    )


def unset_variables(missing: list[tuple[str, str]]) -> str:
    """The message for several unset variables, each with where it is used."""
    lines = "".join(f"\n  ${{{name}}}: {where}" for name, where in missing)
    return (
        f"{len(missing)} variables are not set in the environment (nor in "
        f"$CREDENTIALS_DIRECTORY); set them, or write ${{VAR:-default}}:{lines}"
    )


def no_sources(has_conf_d: bool) -> str:
    """The message for a configuration that would never poll anything."""
    where = "in this file nor in conf.d/*.toml" if has_conf_d else "in this file"
    return (
        f"no sources: there is no [[sources]] table {where}, so nothing would ever be polled; "
        "add one (`pollbridge init PATH` writes a commented starter)"
    )


def entry_label(data: Mapping[str, Any], table: str, index: int) -> str:
    """``sources "orders" (sources[0])``, or ``sources[0]`` for an entry without a name."""
    entries = data.get(table)
    if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
        name = entries[index].get("name")
        if isinstance(name, str) and name:
            return f'{table} "{name}" ({table}[{index}])'
    return f"{table}[{index}]"


def readable_where(where: str, root: Any) -> str:
    """``sources[0].headers.A`` as ``sources "orders" (sources[0]), field headers.A``."""
    m = _ENTRY_PATH.match(where)
    if not m or not isinstance(root, dict):
        return where
    label = entry_label(root, m.group(1), int(m.group(2)))
    return f"{label}, field {m.group(3)}" if m.group(3) else label


def _untag(loc: list[Any]) -> list[Any]:
    """Drop the union member pydantic puts after a tagged field: paginate.cursor.param -> paginate.param."""
    out: list[Any] = []
    for part in loc:
        if out and str(out[-1]) in _TAGGED and part in _TAGGED[str(out[-1])]:
            continue
        out.append(part)
    return out


def _message(err: Any, loc: list[Any], field: str) -> tuple[str, list[Any]]:
    """The reason for one pydantic error (and the location, which a tag error extends)."""
    kind = err["type"]
    msg: str = err["msg"]
    if kind in ("union_tag_not_found", "union_tag_invalid") and loc:
        expected = f"expected one of {', '.join(repr(k) for k in _TAGGED.get(str(loc[-1]), ()))}"
        if kind == "union_tag_not_found":
            return f"required key is missing; {expected}", [*loc, "kind"]
        tag = (err.get("ctx") or {}).get("tag")
        return f"unknown kind {tag!r}; {expected}", [*loc, "kind"]
    if kind in ("model_attributes_type", "model_type") and loc and str(loc[-1]) in _TAGGED:
        return f"expected a table, e.g. [sources.{loc[-1]}] with kind = ...", loc
    if kind in ("model_attributes_type", "model_type"):
        return f"expected a table, got {toml_value(err.get('input'))}", loc
    if kind == "extra_forbidden":
        return "unknown key (check its spelling; unknown keys are not ignored)", loc
    if kind == "missing":
        return "required key is missing", loc
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {toml_value(err.get('input'))}", loc
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :], loc
    if kind == "literal_error":
        return f"{msg}, got {err.get('input')!r}", loc
    if kind == "string_pattern_mismatch" and field == "name":
        got = err.get("input")
        return f"a name may use only letters, digits, '-' and '_'; got {got!r}", loc
    return msg, loc


def format_validation(
    exc: ValidationError,
    data: Mapping[str, Any],
    origin: Mapping[str, list[str]],
    loc_prefix: tuple[str, ...] = (),
    from_env: Mapping[str, str] | None = None,
) -> str:
    """One line per error. ``origin`` gives, per table and index, the conf.d file an entry came
    from ("" for the main file); ``from_env`` maps [bridge] fields set by the environment to
    the variable that set them, so an error names the variable, not a file that lacks the key."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [*loc_prefix, *err["loc"]]
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, EntryProblem):
            loc = [problem.table, problem.index, problem.field]
        where = ""
        file_hint = ""
        if (
            len(loc) >= 2
            and loc[0] in ("sources", "listeners", "hosts")
            and isinstance(loc[1], int)
        ):
            where = entry_label(data, str(loc[0]), loc[1])
            table_origin = origin.get(str(loc[0]), [])
            if loc[1] < len(table_origin):
                file_hint = table_origin[loc[1]]
            loc = loc[2:]
        elif loc and loc[0] == "bridge":
            where = "[bridge]"
            loc = loc[1:]
            variable = (from_env or {}).get(str(loc[0])) if loc else None
            if variable is not None:
                where = f"${variable} (overrides [bridge] {loc[0]})"
                loc = []
        loc = _untag(loc)
        msg, loc = _message(err, loc, ".".join(str(p) for p in loc))
        field = ".".join(str(p) for p in loc)
        parts = [p for p in (file_hint, where, f"field {field}" if field else "") if p]
        lines.append(f"{', '.join(parts)}: {msg}" if parts else msg)
    return "\n  ".join(lines)
