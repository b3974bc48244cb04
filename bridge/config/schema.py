"""The whole configuration: ``[bridge]``, ``[[hosts]]`` and the :class:`Config` that holds them.

The tables themselves are in :mod:`bridge.config.sources` and :mod:`bridge.config.listeners`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bridge.config.fields import (
    ByteSize,
    Duration,
    StrictModel,
    parse_listen_address,
    positive,
)
from bridge.config.listeners import ListenerConfig
from bridge.config.messages import EntryProblem
from bridge.config.modes import event_names
from bridge.config.sources import SourceConfig
from bridge.core.redaction import Redactor
from bridge.core.routing import ListenerRoute
from bridge.errors import ConfigError
from bridge.models import CHANGE_TYPES


class HostConfig(StrictModel):
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


class _TypedEnvSource(EnvSettingsSource):
    """``POLLBRIDGE_<FIELD>`` values are text: read "true" and "4" as the boolean and number
    they spell, since the model is strict and would refuse the text (a file's values are
    typed by TOML and get no such reading)."""

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        value = super().prepare_field_value(field_name, field, value, value_is_complex)
        if isinstance(value, str) and field.annotation in (bool, int):
            try:
                return TypeAdapter(field.annotation).validate_strings(value.strip())
            except ValidationError:
                return value  # left for the model to refuse, naming the variable
        return value


class BridgeSettings(BaseSettings):
    """The ``[bridge]`` table; each field can be overridden by ``POLLBRIDGE_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="POLLBRIDGE_", extra="forbid", frozen=True, strict=True
    )

    state: str = "pollbridge.db"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    shutdown_grace: Duration = timedelta(seconds=10)
    per_host_concurrency: int = Field(default=2, ge=1, le=1000)
    analysis_workers: int = Field(default=1, ge=0, le=64)
    """Worker processes that analyse large responses; 0 analyses every response in process."""
    analysis_worker_min_bytes: ByteSize = 2 * 1024 * 1024
    """A single-page response of this size or more is spooled and analysed in a worker."""
    http: str | None = None
    """``host:port`` serving /metrics, /healthz and the console (/ui/); off when unset."""
    http_token: str | None = None
    """The console's actions (replay, resume, ...) need this token; read-only without it."""
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
        return None if v is None else positive(v)

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
        return (_TypedEnvSource(settings_cls), init_settings)


class Config(StrictModel):
    """The whole validated configuration."""

    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    sources: list[SourceConfig] = Field(default_factory=list)
    listeners: list[ListenerConfig] = Field(default_factory=list)
    hosts: list[HostConfig] = Field(default_factory=list)

    _files: tuple[str, ...] = PrivateAttr(default=())
    _origins: dict[tuple[str, str], str] = PrivateAttr(default_factory=dict)
    _redactor: Redactor = PrivateAttr(default_factory=Redactor)
    _state_location: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        known = {s.name for s in self.sources}
        named = {s.event_type for s in self.sources if s.event_name is not None}
        for i, listener in enumerate(self.listeners):
            for name in listener.events:
                if name not in CHANGE_TYPES and name not in named:
                    raise EntryProblem(
                        "listeners",
                        i,
                        "events",
                        f"no append source has event_type = {name!r} (events: "
                        f"{event_names(named)})",
                    )
            for src in listener.sources or ():
                if src not in known:
                    raise EntryProblem(
                        "listeners",
                        i,
                        "sources",
                        f"unknown source {src!r} (known: {', '.join(sorted(known)) or 'none'})",
                    )
        seen_hosts: set[str] = set()
        for i, host in enumerate(self.hosts):
            if host.name in seen_hosts:
                raise EntryProblem(
                    "hosts", i, "name", f'duplicate host "{host.name}"; names must be unique'
                )
            seen_hosts.add(host.name)
        return self

    def min_intervals_s(self) -> dict[str, float]:
        """Host name -> the least gap in seconds between two requests to it."""
        return {h.name: h.min_interval.total_seconds() for h in self.hosts}

    def bind_origin(
        self,
        files: Iterable[str],
        origins: dict[tuple[str, str], str],
        redactor: Redactor,
        state_location: str,
    ) -> None:
        """What the loader learnt beyond the fields: the files read, which file defines each
        entry, the redactor for every secret and the resolved state location."""
        self._files = tuple(files)
        self._origins = origins
        self._redactor = redactor
        self._state_location = state_location

    @property
    def files(self) -> tuple[str, ...]:
        return self._files

    def origin(self, table: str, name: str) -> str:
        """The file that defines ``sources``/``listeners`` entry ``name`` ("" if unknown)."""
        return self._origins.get((table, name), self._files[0] if self._files else "")

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

    @property
    def redactor(self) -> Redactor:
        """The one redactor for this configuration's secrets (and every URL password)."""
        return self._redactor

    def redact(self, text: str) -> str:
        """``text`` with every secret value this configuration holds replaced by ``***``."""
        return self._redactor.redact(text)

    @property
    def sensitive_values(self) -> frozenset[str]:
        return self._redactor.secrets
