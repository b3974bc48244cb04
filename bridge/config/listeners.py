"""``[[listeners]]``: the webhook receivers, their keys, bodies, pacing and breaker."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from bridge.config.fields import (
    CONTENT_TYPE,
    NAME_PATTERN,
    Duration,
    StrictModel,
    check_ca_file,
    check_headers,
    check_tls,
    check_url,
    never_or_duration,
    positive,
)
from bridge.config.modes import listener_event
from bridge.core.durations import parse_duration
from bridge.core.ratelimit import Rate, parse_rate
from bridge.core.render import BodyFormat, compile_template, default_content_type
from bridge.core.routing import ListenerRoute, check_pointer, compile_match
from bridge.core.signing import decode_secret, decode_signing_key
from bridge.models import CHANGE_TYPES

DEFAULT_RETRY = ("5s", "5m", "30m", "2h", "5h", "10h", "10h")
MAX_BREAKER_COOLDOWN = timedelta(hours=1)

_STANDARD = "set by pollbridge on every webhook (Standard Webhooks)"
RESERVED_HEADERS = {
    "user-agent": "pollbridge sends its own User-Agent (pollbridge/VERSION) to every listener",
    "content-type": "set it with the listener's content_type key",
    "webhook-id": _STANDARD,
    "webhook-timestamp": _STANDARD,
    "webhook-signature": _STANDARD,
}
"""Listener headers the sender always sets itself; a configured value would be dropped."""


@dataclass(frozen=True)
class SigningKeys:
    """A listener's keys, decoded once: ``whsec_`` secrets (v1) and ``whsk_`` keys (v1a)."""

    secrets: tuple[bytes, ...] = ()
    ed25519_texts: tuple[str, ...] = field(default=(), repr=False)
    ed25519: tuple[Ed25519PrivateKey, ...] = field(default=(), repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.secrets or self.ed25519)


class ListenerConfig(StrictModel):
    """One webhook receiver (a ``[[listeners]]`` table)."""

    name: str = Field(pattern=NAME_PATTERN)
    url: str
    sources: list[str] | None = None
    events: list[Annotated[str, AfterValidator(listener_event)]] = Field(
        default_factory=lambda: [str(t) for t in CHANGE_TYPES]
    )
    """Change types (``created``, ``item.created``…) or append sources' ``event_type`` names."""
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
    disable_after: Annotated[timedelta | None, BeforeValidator(never_or_duration)] = timedelta(
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
        return check_url(v)

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        return check_ca_file(v)

    @model_validator(mode="after")
    def _tls(self) -> ListenerConfig:
        check_tls(self.ca_file, self.tls_verify)
        return self

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        check_headers(v, RESERVED_HEADERS)
        return v

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
        return positive(v)

    @field_validator("disable_after")
    @classmethod
    def _disable_after(cls, v: timedelta | None) -> timedelta | None:
        return None if v is None else positive(v)

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
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
        if v is not None and not CONTENT_TYPE.match(v):
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
            # left out: every event, whatever an append source names its events
            frozenset(self.events) if "events" in self.model_fields_set else None,
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
