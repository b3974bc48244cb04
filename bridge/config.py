"""Configuration: TOML files validated once at start-up into frozen, typed objects.

The file is ``--config PATH``, else ``$POLLBRIDGE_CONFIG``, else ``/etc/pollbridge/pollbridge.toml``;
every ``conf.d/*.toml`` beside it is merged in (sources and listeners appended).
"""

from __future__ import annotations

import base64
import os
import re
import ssl
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, quote_plus, unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.core.durations import format_duration, parse_duration
from bridge.core.extract import ItemSpec
from bridge.core.formats import FormatOptions
from bridge.core.guards import DeleteLimit, parse_delete_limit
from bridge.core.pagination import PageSpec
from bridge.core.paths import JsonPath, compile_path
from bridge.core.ratelimit import Rate, parse_rate
from bridge.core.render import BodyFormat, compile_template, default_content_type
from bridge.core.routing import ListenerRoute, check_pointer, compile_match
from bridge.core.signing import decode_secret, decode_signing_key
from bridge.errors import ConfigError
from bridge.models import CHANGE_TYPES, ChangeType

DEFAULT_CONFIG_PATH = Path("/etc/pollbridge/pollbridge.toml")
DEFAULT_RETRY = ("5s", "5m", "30m", "2h", "5h", "10h", "10h")
MAX_BREAKER_COOLDOWN = timedelta(hours=1)
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*\s*(;.*)?$")
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return timedelta(seconds=value)
        except (OverflowError, ValueError):  # 1e300, inf, nan
            raise ValueError(f"duration {value!r} is out of range") from None
    return value


def _positive(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0:
        raise ValueError("must be greater than zero")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]

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
    return value


ByteSize = Annotated[int, BeforeValidator(_size), Field(gt=0)]


def parse_listen_address(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"`` or ``":9464"`` (all interfaces) -> (host, port)."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f'expected "host:port", e.g. "127.0.0.1:9464", got {value!r}')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - an explicit ":port" means all


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


def _check_ca_file(value: str | None) -> str | None:
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


def _check_tls(ca_file: str | None, tls_verify: bool) -> None:
    if ca_file is not None and not tls_verify:
        raise ValueError("give ca_file (verify against that CA) or tls_verify = false, not both")


def _check_path(value: str) -> str:
    compile_path(value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_param(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty query parameter name")
    return value


def _check_secret(value: str) -> str:
    if not value:
        raise ValueError("must not be empty (is the ${VAR} it comes from set?)")
    return value


MaxPages = Annotated[int, Field(ge=1, le=100_000)]
JsonPathText = Annotated[str, AfterValidator(_check_path)]
Param = Annotated[str, AfterValidator(_check_param)]
Secret = Annotated[str, AfterValidator(_check_secret)]


class LinkPaginate(_Strict):
    """Follow the RFC 8288 ``Link: <…>; rel="next"`` header (GitHub style)."""

    kind: Literal["link"]
    max_pages: MaxPages = 100


class NextUrlPaginate(_Strict):
    """The next page's URL is at a JSONPath in the body (JSON:API ``links.next``)."""

    kind: Literal["next_url"]
    next: JsonPathText
    max_pages: MaxPages = 100


class CursorPaginate(_Strict):
    """A cursor from the body, sent as query parameter ``param`` (Stripe, Slack style)."""

    kind: Literal["cursor"]
    cursor: JsonPathText | None = None
    cursor_from_last_item: JsonPathText | None = None
    has_more: JsonPathText | None = None
    param: Param = "cursor"
    max_pages: MaxPages = 100

    @model_validator(mode="after")
    def _one_cursor(self) -> CursorPaginate:
        if (self.cursor is None) == (self.cursor_from_last_item is None):
            raise ValueError(
                "give exactly one of 'cursor' (e.g. \"$.next_cursor\") or "
                '\'cursor_from_last_item\' (e.g. "$.id", with has_more = "$.has_more")'
            )
        return self


class PagePaginate(_Strict):
    """Page numbers in ``param``; a short or empty page is the last."""

    kind: Literal["page"]
    param: Param = "page"
    start: int = Field(default=1, ge=0)
    size_param: Param | None = None
    size: int | None = Field(default=None, ge=1)
    max_pages: MaxPages = 100

    @model_validator(mode="after")
    def _size(self) -> PagePaginate:
        if self.size_param is not None and self.size is None:
            raise ValueError("'size_param' needs 'size' (the page size to send)")
        return self


class OffsetPaginate(_Strict):
    """``offset``/``limit`` parameters; a short or empty page is the last."""

    kind: Literal["offset"]
    param: Param = "offset"
    start: int = Field(default=0, ge=0)
    size_param: Param | None = "limit"
    size: int | None = Field(default=None, ge=1)
    max_pages: MaxPages = 100

    @model_validator(mode="after")
    def _size(self) -> OffsetPaginate:
        if (
            self.size_param is not None
            and self.size is None
            and "size_param" in self.model_fields_set
        ):
            raise ValueError("'size_param' needs 'size' (the page size to send)")
        return self


Paginate = Annotated[
    LinkPaginate | NextUrlPaginate | CursorPaginate | PagePaginate | OffsetPaginate,
    Field(discriminator="kind"),
]
PAGINATE_KINDS = ("link", "next_url", "cursor", "page", "offset")


def _page_spec(p: Paginate) -> PageSpec:
    if isinstance(p, LinkPaginate):
        return PageSpec("link", p.max_pages)
    if isinstance(p, NextUrlPaginate):
        return PageSpec("next_url", p.max_pages, next=compile_path(p.next))
    if isinstance(p, CursorPaginate):
        return PageSpec(
            "cursor",
            p.max_pages,
            cursor=None if p.cursor is None else compile_path(p.cursor),
            cursor_from_last_item=(
                None if p.cursor_from_last_item is None else compile_path(p.cursor_from_last_item)
            ),
            has_more=None if p.has_more is None else compile_path(p.has_more),
            param=p.param,
        )
    size_param = p.size_param if p.size is not None else None
    return PageSpec(
        p.kind, p.max_pages, param=p.param, start=p.start, size_param=size_param, size=p.size
    )


class BearerAuth(_Strict):
    """``Authorization: Bearer <token>``."""

    kind: Literal["bearer"]
    token: Secret


class BasicAuth(_Strict):
    """HTTP Basic authentication."""

    kind: Literal["basic"]
    username: str
    password: str = ""


class HeaderAuth(_Strict):
    """A secret sent in a header of your choice (e.g. ``X-Api-Key``)."""

    kind: Literal["header"]
    name: Param
    value: Secret


class QueryAuth(_Strict):
    """A secret sent as a query parameter (e.g. ``api_key``)."""

    kind: Literal["query"]
    name: Param
    value: Secret


class OAuth2Auth(_Strict):
    """OAuth 2.0 client credentials: a token fetched from ``token_url`` and cached."""

    kind: Literal["oauth2"]
    token_url: str
    client_id: str
    client_secret: Secret
    scope: str | None = None
    audience: str | None = None
    client_auth: Literal["basic", "body"] = "basic"

    @field_validator("token_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v)


Auth = Annotated[
    BearerAuth | BasicAuth | HeaderAuth | QueryAuth | OAuth2Auth, Field(discriminator="kind")
]
AUTH_KINDS = ("bearer", "basic", "header", "query", "oauth2")


def _auth_secrets(auth: Auth | None) -> list[str]:
    if isinstance(auth, BearerAuth):
        return [auth.token]
    if isinstance(auth, BasicAuth):
        return [auth.password] if auth.password else []
    if isinstance(auth, HeaderAuth | QueryAuth):
        return [auth.value]
    if isinstance(auth, OAuth2Auth):
        return [auth.client_secret]
    return []


def _delete_limit(value: Any) -> Any:
    if isinstance(value, str | int):
        parse_delete_limit(value)
    return value


class SourceConfig(_Strict):
    """One polled API (a ``[[sources]]`` table)."""

    name: str = Field(pattern=NAME_PATTERN)
    url: str
    every: Duration | None = None
    cron: str | None = None
    jitter: Duration = timedelta(0)
    timeout: Duration = timedelta(seconds=10)
    method: Literal["GET", "POST"] = "GET"
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    redirect_headers: list[str] = Field(default_factory=list)
    """Names of ``headers`` still sent after a redirect to another origin (none by default)."""
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    items: str = "$[*]"
    key: str | list[str] = "$.id"
    ignore: list[str] = Field(default_factory=list)
    fields: list[str] = Field(default_factory=list)
    baseline: Literal["silent", "emit"] = "silent"
    max_bytes: ByteSize = 32 * 1024 * 1024
    format: Literal["json", "jsonl", "csv", "xml", "rss", "auto"] = "json"
    delimiter: str = ","
    encoding: str = "utf-8"
    paginate: Paginate | None = None
    auth: Auth | None = None
    conditional: bool = True
    max_backoff: Duration = timedelta(hours=1)
    max_deletes: Annotated[str | int, AfterValidator(_delete_limit)] = "50%"
    confirm_polls: int = Field(default=3, ge=2, le=1000)
    deletes: bool = True
    rebaseline: Literal["silent", "emit"] = "silent"
    ca_file: str | None = None
    tls_verify: bool = True

    _spec: ItemSpec = PrivateAttr()
    _format_options: FormatOptions = PrivateAttr()
    _page_spec: PageSpec | None = PrivateAttr(default=None)
    _delete_limit: DeleteLimit = PrivateAttr()

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v)

    @field_validator("every", "timeout", "max_backoff")
    @classmethod
    def _positive(cls, v: timedelta | None) -> timedelta | None:
        return None if v is None else _positive(v)

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        return _check_ca_file(v)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(v, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"invalid cron expression {v!r}: {exc}") from exc
        return v

    @field_validator("items")
    @classmethod
    def _items(cls, v: str) -> str:
        return _check_path(v)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | list[str]) -> str | list[str]:
        paths = [v] if isinstance(v, str) else v
        if not paths:
            raise ValueError("a composite key needs at least one path")
        for p in paths:
            _check_path(p)
        return v

    @field_validator("ignore")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        for p in v:
            _check_path(p)
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        for p in v:
            _check_path(p)
            cp = compile_path(p)
            if cp.steps is None or not all(isinstance(s, str) for s in cp.steps) or not cp.steps:
                raise ValueError(f"{p!r} must be a plain path of names, e.g. $.a.b")
        return v

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, v: str) -> str:
        try:
            FormatOptions(delimiter=v)
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("delimiter ")) from None
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        FormatOptions(encoding=v)
        return v

    @model_validator(mode="after")
    def _schedule(self) -> SourceConfig:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of 'every' (e.g. \"30s\") or 'cron'")
        if self.every is not None and self.jitter >= self.every:
            # the delayed poll would still be running at the next tick, which is then skipped
            raise ValueError(
                f"'jitter' ({format_duration(self.jitter)}) must be shorter than 'every' "
                f"({format_duration(self.every)})"
            )
        if self.body is not None and self.method != "POST":
            raise ValueError("'body' is sent only with method = \"POST\"")
        if (self.delimiter != "," or self.encoding != "utf-8") and self.format not in (
            "csv",
            "auto",
        ):
            raise ValueError("'delimiter' and 'encoding' apply only to format = \"csv\"")
        _check_tls(self.ca_file, self.tls_verify)
        return self

    def model_post_init(self, context: Any, /) -> None:
        keys = [self.key] if isinstance(self.key, str) else self.key
        self._spec = ItemSpec(
            items=compile_path(self.items),
            key=tuple(compile_path(k) for k in keys),
            ignore=tuple(compile_path(p) for p in self.ignore),
            fields=tuple(compile_path(p) for p in self.fields),
        )
        self._format_options = FormatOptions(delimiter=self.delimiter, encoding=self.encoding)
        self._page_spec = None if self.paginate is None else _page_spec(self.paginate)
        self._delete_limit = parse_delete_limit(self.max_deletes)

    @property
    def format_options(self) -> FormatOptions:
        return self._format_options

    @property
    def spec(self) -> ItemSpec:
        """The compiled paths (built once at load)."""
        return self._spec

    @property
    def page_spec(self) -> PageSpec | None:
        """The ``paginate`` table as plain values, or None for a single-page source."""
        return self._page_spec

    @property
    def delete_limit(self) -> DeleteLimit:
        return self._delete_limit

    @property
    def secrets(self) -> list[str]:
        """The secret values of this source's ``auth`` (redacted everywhere)."""
        return _auth_secrets(self.auth)

    @property
    def ignore_paths(self) -> tuple[JsonPath, ...]:
        return self._spec.ignore

    @property
    def interval_s(self) -> float | None:
        return None if self.every is None else self.every.total_seconds()

    def fingerprint_fields(self) -> dict[str, Any]:
        """What defines this source's items: a change here means a new baseline."""
        fields = {
            "url": self.url,
            "params": self.params,
            "body": self.body,
            "items": self.items,
            "key": self.key,
            "ignore": self.ignore,
            "fields": self.fields,
            "format": self.format,
        }
        if self.paginate is not None:
            # only when set, so adding pagination support did not re-baseline existing sources
            fields["paginate"] = self.paginate.model_dump(exclude={"max_pages"})
        return fields


def _never_or_duration(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("never", "off"):
        return None
    return _duration(value)


@dataclass(frozen=True)
class SigningKeys:
    """A listener's keys, decoded once: ``whsec_`` secrets (v1) and ``whsk_`` keys (v1a)."""

    secrets: tuple[bytes, ...] = ()
    ed25519_texts: tuple[str, ...] = field(default=(), repr=False)
    ed25519: tuple[Ed25519PrivateKey, ...] = field(default=(), repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.secrets or self.ed25519)


class ListenerConfig(_Strict):
    """One webhook receiver (a ``[[listeners]]`` table)."""

    name: str = Field(pattern=NAME_PATTERN)
    url: str
    sources: list[str] | None = None
    events: list[ChangeType] = Field(default_factory=lambda: list(CHANGE_TYPES))
    on_fields: list[str] = Field(default_factory=list)
    match: str | None = None
    format: Literal["pollbridge", "cloudevents"] = "pollbridge"
    template: str | None = None
    template_file: str | None = None
    content_type: str | None = None
    secret: str | None = None
    secrets: list[str] = Field(default_factory=list)
    signing_key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    retry: list[Duration] = Field(
        default_factory=lambda: [parse_duration(d) for d in DEFAULT_RETRY]
    )
    max_in_flight: int = Field(default=16, ge=1, le=1024)
    rate: str | None = None
    burst: int = Field(default=1, ge=1, le=10_000)
    breaker_failures: int = Field(default=10, ge=0)
    breaker_cooldown: Duration = timedelta(minutes=1)
    disable_after: Annotated[timedelta | None, BeforeValidator(_never_or_duration)] = timedelta(
        days=5
    )
    coalesce: bool = False
    ca_file: str | None = None
    tls_verify: bool = True

    _route: ListenerRoute = PrivateAttr()
    _body: BodyFormat = PrivateAttr()
    _keys: SigningKeys = PrivateAttr()
    _rate: Rate | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v)

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        return _check_ca_file(v)

    @model_validator(mode="after")
    def _tls(self) -> ListenerConfig:
        _check_tls(self.ca_file, self.tls_verify)
        return self

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        if v is not None:
            decode_secret(v)
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: list[str]) -> list[str]:
        for i, secret in enumerate(v):
            try:
                decode_secret(secret)
            except ValueError as exc:
                raise ValueError(f"secrets[{i}]: {exc}") from None
        if len(set(v)) != len(v):
            raise ValueError("the same secret is listed twice")
        return v

    @field_validator("signing_key")
    @classmethod
    def _signing_key(cls, v: str | None) -> str | None:
        if v is not None:
            decode_signing_key(v)
        return v

    @field_validator("timeout", "breaker_cooldown")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        return _positive(v)

    @field_validator("disable_after")
    @classmethod
    def _disable_after(cls, v: timedelta | None) -> timedelta | None:
        return None if v is None else _positive(v)

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[ChangeType]) -> list[ChangeType]:
        if not v:
            raise ValueError("at least one of created, updated, deleted")
        return v

    @field_validator("on_fields")
    @classmethod
    def _on_fields(cls, v: list[str]) -> list[str]:
        for pointer in v:
            check_pointer(pointer)
        return v

    @field_validator("match")
    @classmethod
    def _match(cls, v: str | None) -> str | None:
        if v is not None:
            compile_match(v)
        return v

    @field_validator("rate")
    @classmethod
    def _rate_text(cls, v: str | None) -> str | None:
        if v is not None:
            parse_rate(v)
        return v

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, v: str | None) -> str | None:
        if v is not None and not _CONTENT_TYPE.match(v):
            raise ValueError(f"expected a media type such as application/json, got {v!r}")
        return v

    @model_validator(mode="after")
    def _compile(self) -> ListenerConfig:
        if self.secret is not None and self.secrets:
            raise ValueError(
                "give 'secret' or 'secrets', not both (to rotate, list the new and the old "
                "secret in 'secrets')"
            )
        self._route = ListenerRoute(
            self.name,
            None if self.sources is None else frozenset(self.sources),
            frozenset(self.events),
            tuple(self.on_fields),
            None if self.match is None else compile_match(self.match),
        )
        self._body = self._body_format()
        secrets = [self.secret] if self.secret else self.secrets
        texts = (self.signing_key,) if self.signing_key else ()
        self._keys = SigningKeys(
            tuple(decode_secret(s) for s in secrets),
            texts,
            tuple(decode_signing_key(t) for t in texts),
        )
        self._rate = None if self.rate is None else parse_rate(self.rate)
        return self

    def _body_format(self) -> BodyFormat:
        if self.template is not None and self.template_file is not None:
            raise ValueError("give 'template' or 'template_file', not both")
        if self.template is None and self.template_file is None:
            content_type = self.content_type or default_content_type(self.format)
            return BodyFormat(self.format, content_type)
        if "format" in self.model_fields_set and self.format != "pollbridge":
            raise ValueError(
                f"a template makes its own body; remove format = {self.format!r} or the template"
            )
        if self.template is not None:
            source, label = self.template, "template"
        else:
            assert self.template_file is not None  # noqa: S101 - checked above
            label = f"template_file {self.template_file!r}"
            try:
                source = Path(self.template_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"{label}: cannot read it: {exc}") from None
        return BodyFormat(
            "template",
            self.content_type or default_content_type("template"),
            compile_template(source, label),
            label,
        )

    @property
    def signing_keys(self) -> list[bytes]:
        """The ``whsec_`` secrets' bytes, in the order they sign."""
        return list(self._keys.secrets)

    @property
    def keys(self) -> SigningKeys:
        """Every key this listener signs with."""
        return self._keys

    @property
    def body_format(self) -> BodyFormat:
        """How the request body is built (compiled at load)."""
        return self._body

    @property
    def rate_limit(self) -> Rate | None:
        return self._rate

    @property
    def retry_s(self) -> list[float]:
        return [d.total_seconds() for d in self.retry]

    def sensitive_values(self) -> list[str]:
        """This listener's secrets and signing key, for redaction."""
        values = [*self.secrets, *([self.secret] if self.secret else [])]
        if self.signing_key:
            values.append(self.signing_key)
        return values

    def route(self) -> ListenerRoute:
        return self._route


class HostConfig(_Strict):
    """Politeness towards one API host (a ``[[hosts]]`` table), shared by all its sources."""

    name: str
    min_interval: Duration = timedelta(0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip().lower()
        if not v or "/" in v or ":" in v or " " in v:
            raise ValueError(
                f"expected a host name such as api.github.com (no scheme, port or path), got {v!r}"
            )
        return v

    @field_validator("min_interval")
    @classmethod
    def _not_negative(cls, v: timedelta) -> timedelta:
        if v.total_seconds() < 0:
            raise ValueError("must not be negative")
        return v


class BridgeSettings(BaseSettings):
    """The ``[bridge]`` table; each field can be overridden by ``POLLBRIDGE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="POLLBRIDGE_", extra="forbid", frozen=True)

    state: str = "pollbridge.db"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    shutdown_grace: Duration = timedelta(seconds=10)
    per_host_concurrency: int = Field(default=2, ge=1, le=1000)
    http: str | None = None
    """``host:port`` serving /metrics and /healthz; off when unset."""
    retention: Duration | None = timedelta(days=14)
    """Events and finished deliveries older than this are pruned daily; ``"off"`` keeps them."""
    deny_private_targets: bool = False
    """Refuse listener connections to loopback, private, link-local, CGNAT, IPv4-mapped addresses."""
    lease: Duration = timedelta(seconds=30)
    """How long a source lease (and an instance's heartbeat) lasts without renewal: with several
    instances on one PostgreSQL store, the others take over a dead instance's work after this."""

    @field_validator("lease")
    @classmethod
    def _lease(cls, v: timedelta) -> timedelta:
        if v.total_seconds() < 1:
            raise ValueError("must be at least 1s (it is renewed every third of it)")
        return v

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @field_validator("http", mode="before")
    @classmethod
    def _http(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and v.strip().lower() in ("", "off")):
            return None
        if not isinstance(v, str):
            raise ValueError('expected "host:port", e.g. "127.0.0.1:9464"')
        parse_listen_address(v)
        return v.strip()

    @field_validator("retention", mode="before")
    @classmethod
    def _retention_off(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in ("off", "never", "forever"):
            return None
        return v

    @field_validator("retention")
    @classmethod
    def _retention_positive(cls, v: timedelta | None) -> timedelta | None:
        return None if v is None else _positive(v)

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The (host, port) of the metrics/health server, or None when it is off."""
        return None if self.http is None else parse_listen_address(self.http)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, so a unit can change one setting without a copy.
        return (env_settings, init_settings)


class Config(_Strict):
    """The whole validated configuration."""

    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    sources: list[SourceConfig] = Field(default_factory=list)
    listeners: list[ListenerConfig] = Field(default_factory=list)
    hosts: list[HostConfig] = Field(default_factory=list)

    _files: tuple[str, ...] = PrivateAttr(default=())
    _sensitive: frozenset[str] = PrivateAttr(default=frozenset())
    _state_location: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        names = [s.name for s in self.sources]
        known = set(names)
        for i, listener in enumerate(self.listeners):
            for src in listener.sources or ():
                if src not in known:
                    raise ValueError(
                        f'listeners "{listener.name}" (listeners[{i}]), field sources: '
                        f"unknown source {src!r} (known: {', '.join(sorted(known)) or 'none'})"
                    )
        seen_hosts: set[str] = set()
        for i, host in enumerate(self.hosts):
            if host.name in seen_hosts:
                raise ValueError(f'hosts[{i}]: duplicate host "{host.name}"; names must be unique')
            seen_hosts.add(host.name)
        return self

    def min_intervals_s(self) -> dict[str, float]:
        """Host name -> the least gap in seconds between two requests to it."""
        return {h.name: h.min_interval.total_seconds() for h in self.hosts}

    @property
    def files(self) -> tuple[str, ...]:
        return self._files

    @property
    def state_location(self) -> str:
        """The SQLite path (made absolute) or the database URL the store opens."""
        return self._state_location

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise ConfigError(
            f"no source named {name!r} (known: {', '.join(s.name for s in self.sources) or 'none'})",
            file=self._files[0] if self._files else None,
        )

    def routes(self) -> list[ListenerRoute]:
        return [listener.route() for listener in self.listeners]

    def redact(self, text: str) -> str:
        """``text`` with every secret value this configuration holds replaced by ``***``."""
        for value in sorted(self._sensitive, key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    @property
    def sensitive_values(self) -> frozenset[str]:
        return self._sensitive


# --- loading -------------------------------------------------------------------------------

# Values taken from the environment into these places are secrets: redacted in all output.
_SECRETISH = re.compile(
    r"secret|token|password|passwd|auth|headers|cookie|api_?key|signing_key|credential", re.I
)

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _lookup(name: str, env: Mapping[str, str]) -> str | None:
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        path = Path(cred_dir) / name
        if path.is_file():
            return path.read_text().rstrip("\r\n")
    return env.get(name)


_ENTRY_PATH = re.compile(r"^(sources|listeners|hosts)\[(\d+)\]\.?(.*)$")


def _readable_where(where: str, root: Any) -> str:
    """``sources[0].headers.A`` as ``sources "orders" (sources[0]), field headers.A``."""
    m = _ENTRY_PATH.match(where)
    if not m or not isinstance(root, dict):
        return where
    label = _entry_label(root, m.group(1), int(m.group(2)))
    return f"{label}, field {m.group(3)}" if m.group(3) else label


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
                missing.append((name, _readable_where(where, root)))
                return ""
            if default is None:
                raise ConfigError(
                    f"${{{name}}} is not set in the environment (nor in $CREDENTIALS_DIRECTORY); "
                    f"set it, or write ${{{name}:-default}}",
                    file=file,
                    where=_readable_where(where, root),
                )
            return default
        if found and _SECRETISH.search(where):
            sensitive.add(found)
        return found

    return _VAR.sub(repl, value)


def _interpolate_file(path: Path, env: Mapping[str, str], sensitive: set[str]) -> Any:
    """The file's TOML with its variables replaced; every unset one is named in one error."""
    missing: list[tuple[str, str]] = []
    data = _interpolate(_read_toml(path), env, "", str(path), sensitive, missing=missing)
    if len(missing) == 1:
        name, where = missing[0]
        raise ConfigError(
            f"${{{name}}} is not set in the environment (nor in $CREDENTIALS_DIRECTORY); "
            f"set it, or write ${{{name}:-default}}",
            file=str(path),
            where=where,
        )
    if missing:
        lines = "".join(f"\n  ${{{name}}}: {where}" for name, where in missing)
        raise ConfigError(
            f"{len(missing)} variables are not set in the environment (nor in "
            f"$CREDENTIALS_DIRECTORY); set them, or write ${{VAR:-default}}:{lines}",
            file=str(path),
        )
    return data


def _read_toml(path: Path) -> dict[str, Any]:
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


def resolve_config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """``--config``, else ``$POLLBRIDGE_CONFIG``, else the system default."""
    if explicit:
        return Path(explicit)
    if env.get("POLLBRIDGE_CONFIG"):
        return Path(env["POLLBRIDGE_CONFIG"])
    return DEFAULT_CONFIG_PATH


def _entry_label(data: Mapping[str, Any], table: str, index: int) -> str:
    entries = data.get(table)
    if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
        name = entries[index].get("name")
        if isinstance(name, str) and name:
            return f'{table} "{name}" ({table}[{index}])'
    return f"{table}[{index}]"


def _format_validation(
    exc: ValidationError,
    data: Mapping[str, Any],
    origin: Mapping[str, list[str]],
    loc_prefix: tuple[str, ...] = (),
    from_env: Mapping[str, str] | None = None,
) -> str:
    """One line per error; ``from_env`` maps [bridge] fields set by the environment to the
    variable that set them, so an error names the variable, not a file that lacks the key."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [*loc_prefix, *err["loc"]]
        where = ""
        file_hint = ""
        if (
            len(loc) >= 2
            and loc[0] in ("sources", "listeners", "hosts")
            and isinstance(loc[1], int)
        ):
            where = _entry_label(data, str(loc[0]), loc[1])
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
        msg = err["msg"]
        if err["type"] in ("union_tag_not_found", "union_tag_invalid") and loc:
            kinds = _TAGGED.get(str(loc[-1]), ())
            expected = f"expected one of {', '.join(repr(k) for k in kinds)}"
            if err["type"] == "union_tag_not_found":
                msg = f"required key is missing; {expected}"
            else:
                tag = (err.get("ctx") or {}).get("tag")
                msg = f"unknown kind {tag!r}; {expected}"
            loc = [*loc, "kind"]
        elif err["type"] == "model_attributes_type" and loc and str(loc[-1]) in _TAGGED:
            msg = f"expected a table, e.g. [sources.{loc[-1]}] with kind = ..."
        field = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; unknown keys are not ignored)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        elif err["type"] == "string_pattern_mismatch" and field == "name":
            msg = f"a name may use only letters, digits, '-' and '_'; got {err.get('input')!r}"
        parts = [p for p in (file_hint, where, f"field {field}" if field else "") if p]
        lines.append(f"{', '.join(parts)}: {msg}" if parts else msg)
    return "\n  ".join(lines)


_TAGGED: dict[str, tuple[str, ...]] = {"paginate": PAGINATE_KINDS, "auth": AUTH_KINDS}


def _untag(loc: list[Any]) -> list[Any]:
    """Drop the union member pydantic puts after a tagged field: paginate.cursor.param -> paginate.param."""
    out: list[Any] = []
    for part in loc:
        if out and str(out[-1]) in _TAGGED and part in _TAGGED[str(out[-1])]:
            continue
        out.append(part)
    return out


def _merge(main: dict[str, Any], extra: dict[str, Any], main_file: str, extra_file: str) -> None:
    for table in ("sources", "listeners"):
        if table in extra:
            if not isinstance(extra[table], list):
                raise ConfigError(
                    f"'{table}' must be an array of tables ([[{table}]])", file=extra_file
                )
            main.setdefault(table, []).extend(extra[table])
    unknown = set(extra) - {"sources", "listeners"}
    if unknown:
        raise ConfigError(
            f"a conf.d file may hold only [[sources]] and [[listeners]]; found {sorted(unknown)} "
            f"(put [bridge] settings in {main_file})",
            file=extra_file,
        )


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read, interpolate, merge and validate the configuration; raise ConfigError on any problem."""
    env = os.environ if env is None else env
    main_path = resolve_config_path(path, env)
    sensitive: set[str] = set()
    data = _interpolate_file(main_path, env, sensitive)
    files = [str(main_path)]
    origin_of: dict[tuple[str, str], str] = {}
    for table in ("sources", "listeners"):
        for entry in data.get(table, []) if isinstance(data.get(table), list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                origin_of[(table, entry["name"])] = str(main_path)
    conf_d = main_path.parent / "conf.d"
    if conf_d.is_dir():
        for extra_path in sorted(conf_d.glob("*.toml")):
            extra = _interpolate_file(extra_path, env, sensitive)
            for table in ("sources", "listeners"):
                for entry in extra.get(table, []) if isinstance(extra.get(table), list) else []:
                    name = entry.get("name") if isinstance(entry, dict) else None
                    if isinstance(name, str):
                        if (table, name) in origin_of:
                            raise ConfigError(
                                f'duplicate {table[:-1]} name "{name}": defined in '
                                f"{origin_of[(table, name)]} and in {extra_path}",
                                file=str(extra_path),
                            )
                        origin_of[(table, name)] = str(extra_path)
            _merge(data, extra, str(main_path), str(extra_path))
            files.append(str(extra_path))
    _check_duplicates(data, str(main_path))
    _resolve_template_files(data, origin_of, main_path)
    unknown_top = set(data) - {"bridge", "sources", "listeners", "hosts"}
    if unknown_top:
        raise ConfigError(
            f"unknown top-level table(s) {sorted(unknown_top)}; expected [bridge], [[sources]], "
            "[[listeners]], [[hosts]]",
            file=str(main_path),
        )
    if "hosts" in data and not isinstance(data["hosts"], list):
        raise ConfigError("'hosts' must be an array of tables ([[hosts]])", file=str(main_path))
    bridge_data = data.get("bridge", {})
    if not isinstance(bridge_data, dict):
        raise ConfigError("[bridge] must be a table", file=str(main_path))
    # The file each entry came from, named in errors only when it is a conf.d file.
    entry_origin = {
        table: [
            origin_of.get((table, str(e.get("name"))), "") if isinstance(e, dict) else ""
            for e in data[table]
        ]
        for table in ("sources", "listeners")
        if isinstance(data.get(table), list)
    }
    entry_origin = {
        table: [o if o != str(main_path) else "" for o in origins]
        for table, origins in entry_origin.items()
    }
    # BridgeSettings is validated on its own, so its error locations lack the table name.
    loc_prefix: tuple[str, ...] = ("bridge",)
    try:
        bridge = BridgeSettings(**bridge_data)
        loc_prefix = ()
        config = Config(
            bridge=bridge,
            sources=data.get("sources", []),
            listeners=data.get("listeners", []),
            hosts=data.get("hosts", []),
        )
    except ValidationError as exc:
        # an error may quote the value it refused, and that value may be an interpolated secret
        detail = _redact(
            _format_validation(exc, data, entry_origin, loc_prefix, _bridge_env_overrides()),
            sensitive,
        )
        raise ConfigError(
            f"{exc.error_count()} problem(s):\n  {detail}", file=str(main_path)
        ) from None
    except ValueError as exc:
        raise ConfigError(_redact(str(exc), sensitive), file=str(main_path)) from None
    for listener in config.listeners:
        sensitive.update(listener.sensitive_values())
    for source in config.sources:
        sensitive.update(source.secrets)
    sensitive |= _declared_secrets(config)
    config._files = tuple(files)
    config._sensitive = frozenset(_with_encodings(v for v in sensitive if len(v) >= 4))
    config._state_location = _resolve_state(config.bridge.state, env)
    return config


def _bridge_env_overrides() -> dict[str, str]:
    """[bridge] field -> the ``POLLBRIDGE_<FIELD>`` variable that sets it (pydantic-settings
    reads ``os.environ``, matching names case-insensitively)."""
    present = {name.upper(): name for name in os.environ}
    return {
        field: present[f"POLLBRIDGE_{field.upper()}"]
        for field in BridgeSettings.model_fields
        if f"POLLBRIDGE_{field.upper()}" in present
    }


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


_SECRET_NAME = re.compile(r"auth|token|secret|passw|key|cookie|session|signature", re.IGNORECASE)


def _declared_secrets(config: Config) -> set[str]:
    """Secret values written literally: listener secrets, credential-looking headers and
    params, passwords in URLs (interpolated ``${VAR}`` values are collected separately)."""
    found: set[str] = set()
    endpoints: list[SourceConfig | ListenerConfig] = [*config.sources, *config.listeners]
    for endpoint in endpoints:
        pairs = list(endpoint.headers.items())
        if isinstance(endpoint, SourceConfig):
            pairs += [(k, str(v)) for k, v in endpoint.params.items()]
            if isinstance(endpoint.auth, BasicAuth) and endpoint.auth.password:
                userinfo = f"{endpoint.auth.username}:{endpoint.auth.password}"
                found.add(base64.b64encode(userinfo.encode()).decode())
        for name, value in pairs:
            if _SECRET_NAME.search(name) and value:
                scheme, _, credential = value.partition(" ")
                if credential and scheme.lower() in ("bearer", "basic", "token", "digest"):
                    found.add(credential.strip())  # "Bearer ***" still says what was sent
                else:
                    found.add(value)
        parts = urlsplit(endpoint.url)
        if parts.password:
            found.add(parts.password)
            found.add(unquote(parts.password))
            userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password)}"
            found.add(base64.b64encode(userinfo.encode()).decode())  # as sent in Basic auth
    for listener in config.listeners:
        for value in listener.sensitive_values():
            found.add(value)
            found.add(value.removeprefix("whsec_"))  # the key's base64, as a receiver may log it
    return found


def _with_encodings(values: Iterable[str]) -> set[str]:
    """Each secret and the forms it takes in a URL, so an echoed query string is caught too."""
    out: set[str] = set()
    for value in values:
        out |= {value, quote(value, safe=""), quote_plus(value)}
    return out


def _redact(text: str, sensitive: Iterable[str]) -> str:
    for value in sorted((v for v in sensitive if len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _check_duplicates(data: Mapping[str, Any], file: str) -> None:
    for table in ("sources", "listeners"):
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


def _resolve_state(state: str, env: Mapping[str, str]) -> str:
    if "://" in state:
        return state
    path = Path(state).expanduser()
    if not path.is_absolute():
        base = env.get("STATE_DIRECTORY", "").split(":")[0]
        path = Path(base) / path if base else Path.cwd() / path
    return str(path)


def iter_summary(config: Config) -> Iterable[str]:
    """Human-readable lines describing the configuration, with secrets redacted."""
    yield f"config: {', '.join(config.files)}"
    yield f"state:  {config.redact(config.state_location)}"
    yield f"sources ({len(config.sources)}):"
    for s in config.sources:
        when = f"every {_fmt(s.every)}" if s.every else f"cron {s.cron!r}"
        fmt = "" if s.format == "json" else f", format {s.format}"
        yield f"  - {s.name}: {s.method} {config.redact(safe_url(s.url))} {when}{fmt}, items {s.items}, key {s.key}"
        if s.paginate is not None:
            yield f"      paginate: {s.paginate.kind}, at most {s.paginate.max_pages} pages"
        if s.auth is not None:
            yield f"      auth: {s.auth.kind} (secrets ***)"
    for h in config.hosts:
        yield f"host {h.name}: at most {config.bridge.per_host_concurrency} requests at once, min_interval {_fmt(h.min_interval)}"
    yield f"listeners ({len(config.listeners)}):"
    for lst in config.listeners:
        yield f"  - {lst.name}: POST {config.redact(safe_url(lst.url))} <- {_listener_summary(lst)}"
    # valid, but rarely what a new user meant: say so rather than leave them wondering later
    if not config.sources:
        yield "note: no [[sources]]: `pollbridge run` has nothing to poll"
    routed = {
        name
        for lst in config.listeners
        for name in (lst.sources if lst.sources is not None else [s.name for s in config.sources])
    }
    unrouted = [s.name for s in config.sources if s.name not in routed]
    if config.sources and not config.listeners:
        yield "note: no [[listeners]]: changes are recorded, but sent nowhere"
    elif unrouted:
        yield (
            f"note: no listener takes source(s) {', '.join(unrouted)}: their changes are "
            "recorded, but sent nowhere"
        )


def _listener_summary(lst: ListenerConfig) -> str:
    parts = [
        ", ".join(lst.sources) if lst.sources is not None else "all sources",
        f"events {', '.join(lst.events)}",
    ]
    if lst.on_fields:
        parts.append(f"on_fields {', '.join(lst.on_fields)}")
    if lst.match is not None:
        parts.append(f"match {lst.match}")
    body = lst.body_format
    parts.append(
        f"body {body.label or body.kind} ({body.content_type})"
        if body.kind == "template"
        else f"format {body.kind} ({body.content_type})"
    )
    keys = lst.keys
    signed = []
    if keys.secrets:
        signed.append(f"{len(keys.secrets)} secret(s) ***")
    if keys.ed25519:
        signed.append("ed25519 key ***")
    parts.append(f"signed ({', '.join(signed)})" if signed else "unsigned")
    pace = [f"max_in_flight {lst.max_in_flight}"]
    if lst.rate_limit is not None:
        pace.append(f"rate {lst.rate_limit} (burst {lst.burst})")
    if lst.breaker_failures:
        pace.append(
            f"breaker after {lst.breaker_failures} failures for {_fmt(lst.breaker_cooldown)}"
        )
    if lst.disable_after is not None:
        pace.append(f"disable after {_fmt(lst.disable_after)} of failures")
    if lst.coalesce:
        pace.append("coalesce")
    parts.append(", ".join(pace))
    return "; ".join(parts)


def safe_url(url: str) -> str:
    """``url`` with any user:password part hidden, for output."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()


def _fmt(value: timedelta) -> str:
    from bridge.core.durations import format_duration

    return format_duration(value)


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
        return _resolve_state(env["POLLBRIDGE_STATE"], env)
    main_path = resolve_config_path(path, env)
    data = _read_toml(main_path)
    bridge = data.get("bridge", {})
    state = bridge.get("state", BridgeSettings.model_fields["state"].default)
    if not isinstance(state, str):
        raise ConfigError(
            "must be a string (a file path or a database URL)",
            file=str(main_path),
            where="[bridge] state",
        )
    state = _interpolate(state, env, "bridge.state", str(main_path), set())
    return _resolve_state(state, env)
