"""The value types every table shares: durations, sizes, URLs, paths, headers, secrets.

Each type is strict: a boolean is never a duration or a number, a number never a string. The
few fields that take two shapes (a path or a list of paths) check the shape first, so an error
says what was expected in the user's words, not in pydantic's.
"""

from __future__ import annotations

import re
import ssl
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from bridge.core.durations import parse_duration
from bridge.core.guards import parse_delete_limit
from bridge.core.paths import compile_path

NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*\s*(;.*)?$")


class StrictModel(BaseModel):
    """A table: unknown keys are errors, values are never coerced, the result is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def toml_value(value: Any) -> str:
    """``value`` as it would be written in TOML, for "got ..." in a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


# --- durations and sizes ---------------------------------------------------------------------


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return timedelta(seconds=value)
        except (OverflowError, ValueError):  # 1e300, inf, nan
            raise ValueError(f"duration {value!r} is out of range") from None
    if isinstance(value, timedelta):
        return value
    raise ValueError(
        f'expected a duration such as "30s", "5m" or a number of seconds, got {toml_value(value)}'
    )


def positive(value: timedelta) -> timedelta:
    """Refuse a zero or negative duration."""
    if value.total_seconds() <= 0:
        raise ValueError("must be greater than zero")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def never_or_duration(value: Any) -> Any:
    """``"never"`` / ``"off"`` as None, anything else as a duration."""
    if isinstance(value, str) and value.strip().lower() in ("never", "off"):
        return None
    return _duration(value)


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def _size(value: Any) -> Any:
    if isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f"invalid size {value!r}; expected bytes, e.g. 32MiB or 1000000")
        return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f'expected a size such as "32MiB" or a whole number of bytes, got {toml_value(value)}'
        )
    return value


ByteSize = Annotated[int, BeforeValidator(_size), Field(gt=0)]


# --- URLs, files, addresses --------------------------------------------------------------------


def parse_listen_address(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"`` or ``":9464"`` (all interfaces) -> (host, port)."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f'expected "host:port", e.g. "127.0.0.1:9464", got {value!r}')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - an explicit ":port" means all


def check_url(value: str) -> str:
    """Accept an http:// or https:// URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


def check_ca_file(value: str | None) -> str | None:
    """An absolute path to a readable PEM CA bundle (or None)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ValueError(f"ca_file must be an absolute path, got {value!r}")
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ValueError(f"ca_file {value!r} does not exist") from None
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"ca_file {value!r} is not a readable PEM CA bundle: {exc}") from None
    return str(path)


def check_tls(ca_file: str | None, tls_verify: bool) -> None:
    """``ca_file`` and ``tls_verify = false`` contradict each other."""
    if ca_file is not None and not tls_verify:
        raise ValueError("give ca_file (verify against that CA) or tls_verify = false, not both")


# --- paths, parameters, secrets ------------------------------------------------------------------


def check_path(value: str) -> str:
    """A JSONPath that compiles."""
    compile_path(value)
    return value


def _check_param(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty query parameter name")
    return value


def _check_secret(value: str) -> str:
    if not value:
        raise ValueError("must not be empty (is the ${VAR} it comes from set?)")
    return value


MaxPages = Annotated[int, Field(ge=1, le=100_000)]
JsonPathText = Annotated[str, AfterValidator(check_path)]
Param = Annotated[str, AfterValidator(_check_param)]
Secret = Annotated[str, AfterValidator(_check_secret)]


def _json_paths(value: Any) -> Any:
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        return value
    raise ValueError(f"expected a JSONPath or a list of JSONPaths, got {toml_value(value)}")


JsonPaths = Annotated[str | list[str], BeforeValidator(_json_paths)]
"""One path, or a list of them (a composite key)."""


def _param_value(value: Any) -> Any:
    if isinstance(value, str | int | float):  # bool is an int
        return value
    raise ValueError(f"expected a string, a number or true/false, got {toml_value(value)}")


ParamValue = Annotated[str | int | float | bool, BeforeValidator(_param_value)]


def _delete_limit(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(
            f'expected a number of items (e.g. 50) or a percentage (e.g. "50%"), got '
            f"{toml_value(value)}"
        )
    parse_delete_limit(value)
    return value


DeleteLimitText = Annotated[str | int, BeforeValidator(_delete_limit)]


# --- headers -------------------------------------------------------------------------------------

FRAMING_HEADERS = frozenset(
    [
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
    ]
)
"""Hop-by-hop and framing headers: HTTP itself sets them from the request; a configured value
could make the receiver read another body length than was sent (request smuggling)."""


def check_headers(headers: dict[str, str], reserved: dict[str, str] | None = None) -> None:
    """Refuse framing headers, and ``reserved`` ones (lower-case name -> why), naming each."""
    for name in headers:
        lower = name.strip().lower()
        if lower in FRAMING_HEADERS or lower.startswith("proxy-"):
            raise ValueError(
                f"header {name!r} is a hop-by-hop or framing header, which pollbridge sets "
                "from the request itself; remove it"
            )
        if reserved and lower in reserved:
            raise ValueError(f"header {name!r} is reserved: {reserved[lower]}")
