"""Configuration: TOML files validated once at start-up into frozen, typed objects.

- :mod:`~bridge.config.fields`: the value types every table shares (strict)
- :mod:`~bridge.config.sources`, :mod:`~bridge.config.listeners`, :mod:`~bridge.config.schema`:
  the tables
- :mod:`~bridge.config.loader`: which file, TOML, ``${VAR}``, conf.d, the state location
- :mod:`~bridge.config.messages`: validation errors in the configuration's own words
- :mod:`~bridge.config.sensitive`: which values are secrets (for the redactor)
- :mod:`~bridge.config.summary`, :mod:`~bridge.config.risks`: what ``pollbridge check`` prints
"""

from bridge.config.fields import NAME_PATTERN, parse_listen_address
from bridge.config.listeners import (
    DEFAULT_RETRY,
    MAX_BREAKER_COOLDOWN,
    RESERVED_HEADERS,
    ListenerConfig,
    SigningKeys,
)
from bridge.config.loader import (
    DEFAULT_CONFIG_PATH,
    load_config,
    locate_state,
    resolve_config_path,
    resolve_state,
)
from bridge.config.risks import PUBLISHED_SECRETS, ConfigWarning, risky_settings
from bridge.config.schema import BridgeSettings, Config, HostConfig
from bridge.config.sources import (
    AUTH_KINDS,
    PAGINATE_KINDS,
    Auth,
    BasicAuth,
    BearerAuth,
    CursorPaginate,
    HeaderAuth,
    LinkPaginate,
    NextUrlPaginate,
    OAuth2Auth,
    OffsetPaginate,
    PagePaginate,
    Paginate,
    QueryAuth,
    SourceConfig,
)
from bridge.config.summary import iter_summary, safe_url, summary_doc

__all__ = [
    "AUTH_KINDS",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_RETRY",
    "MAX_BREAKER_COOLDOWN",
    "NAME_PATTERN",
    "PAGINATE_KINDS",
    "PUBLISHED_SECRETS",
    "RESERVED_HEADERS",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "BridgeSettings",
    "Config",
    "ConfigWarning",
    "CursorPaginate",
    "HeaderAuth",
    "HostConfig",
    "LinkPaginate",
    "ListenerConfig",
    "NextUrlPaginate",
    "OAuth2Auth",
    "OffsetPaginate",
    "PagePaginate",
    "Paginate",
    "QueryAuth",
    "SigningKeys",
    "SourceConfig",
    "iter_summary",
    "load_config",
    "locate_state",
    "parse_listen_address",
    "resolve_config_path",
    "resolve_state",
    "risky_settings",
    "safe_url",
    "summary_doc",
]
