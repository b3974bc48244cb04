"""``[[sources]]``: the APIs to poll, with their ``paginate`` and ``auth`` tables."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from bridge.config.detail import DetailFetch
from bridge.config.fields import (
    NAME_PATTERN,
    ByteSize,
    DeleteLimitText,
    Duration,
    JsonPaths,
    JsonPathText,
    MaxPages,
    Param,
    ParamValue,
    Secret,
    StrictModel,
    check_ca_file,
    check_headers,
    check_path,
    check_tls,
    check_url,
    positive,
)
from bridge.config.incremental import IncrementalConfig, check_incremental
from bridge.config.modes import (
    DEFAULT_EVENT_TYPE,
    DEFAULT_REMEMBER_COUNT,
    MAX_REMEMBER_COUNT,
    Mode,
    check_event_type,
    mode_problem,
)
from bridge.core.append import SeenWindow
from bridge.core.bodypath import BodyPathError, parse_body_path, with_body_value
from bridge.core.detail import DetailSpec, parse_detail_url
from bridge.core.durations import format_duration
from bridge.core.extract import ItemSpec
from bridge.core.formats import FormatOptions
from bridge.core.graphql import graphql_body
from bridge.core.guards import DeleteLimit, parse_delete_limit
from bridge.core.pagination import PageSpec
from bridge.core.paths import JsonPath, compile_path


class LinkPaginate(StrictModel):
    """Follow the RFC 8288 ``Link: <…>; rel="next"`` header (GitHub style)."""

    kind: Literal["link"]
    max_pages: MaxPages = 100


class NextUrlPaginate(StrictModel):
    """The next page's URL is at a JSONPath in the body (JSON:API ``links.next``)."""

    kind: Literal["next_url"]
    next: JsonPathText
    max_pages: MaxPages = 100


class CursorPaginate(StrictModel):
    """A cursor from the body, sent as query parameter ``param`` (Stripe, Slack style)."""

    kind: Literal["cursor"]
    cursor: JsonPathText | None = None
    cursor_from_last_item: JsonPathText | None = None
    has_more: JsonPathText | None = None
    param: Param = "cursor"
    body_param: str | None = None
    """A dotted path into the JSON request body (``variables.after``) instead of ``param``."""
    max_pages: MaxPages = 100

    @field_validator("body_param")
    @classmethod
    def _body_param(cls, v: str | None) -> str | None:
        if v is not None:
            parse_body_path(v)
        return v

    @model_validator(mode="after")
    def _one_cursor(self) -> CursorPaginate:
        if (self.cursor is None) == (self.cursor_from_last_item is None):
            raise ValueError(
                "give exactly one of 'cursor' (e.g. \"$.next_cursor\") or "
                '\'cursor_from_last_item\' (e.g. "$.id", with has_more = "$.has_more")'
            )
        if self.body_param is not None and "param" in self.model_fields_set:
            raise ValueError(
                "give exactly one of 'param' (a query parameter) or 'body_param' (a dotted "
                'path into the JSON body, e.g. "variables.after")'
            )
        return self


class PagePaginate(StrictModel):
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


class OffsetPaginate(StrictModel):
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
            body_param=None if p.body_param is None else parse_body_path(p.body_param),
        )
    size_param = p.size_param if p.size is not None else None
    return PageSpec(
        p.kind, p.max_pages, param=p.param, start=p.start, size_param=size_param, size=p.size
    )


class BearerAuth(StrictModel):
    """``Authorization: Bearer <token>``."""

    kind: Literal["bearer"]
    token: Secret


class BasicAuth(StrictModel):
    """HTTP Basic authentication."""

    kind: Literal["basic"]
    username: str
    password: str = ""


class HeaderAuth(StrictModel):
    """A secret sent in a header of your choice (e.g. ``X-Api-Key``)."""

    kind: Literal["header"]
    name: Param
    value: Secret


class QueryAuth(StrictModel):
    """A secret sent as a query parameter (e.g. ``api_key``)."""

    kind: Literal["query"]
    name: Param
    value: Secret


class OAuth2Auth(StrictModel):
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
        return check_url(v)


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


class GraphQLRequest(StrictModel):
    """``[sources.graphql]``: the source is a GraphQL query, POSTed as ``{"query","variables"}``."""

    query: str
    variables: dict[str, Any] = Field(default_factory=dict)

    @field_validator("query")
    @classmethod
    def _query(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty GraphQL query")
        return v


class SourceConfig(StrictModel):
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
    params: dict[str, ParamValue] = Field(default_factory=dict)
    items: str = "$[*]"
    key: JsonPaths = "$.id"
    ignore: list[str] = Field(default_factory=list)
    fields: list[str] = Field(default_factory=list)
    baseline: Literal["silent", "emit"] = "silent"
    max_bytes: ByteSize = 32 * 1024 * 1024
    format: Literal["json", "jsonl", "csv", "xml", "rss", "auto"] = "json"
    delimiter: str = ","
    encoding: str = "utf-8"
    paginate: Paginate | None = None
    graphql: GraphQLRequest | None = None
    detail: DetailFetch | None = None
    auth: Auth | None = None
    conditional: bool = True
    max_backoff: Duration = timedelta(hours=1)
    max_deletes: DeleteLimitText = "50%"
    confirm_polls: int = Field(default=3, ge=2, le=1000)
    deletes: bool = True
    rebaseline: Literal["silent", "emit"] = "silent"
    ca_file: str | None = None
    tls_verify: bool = True
    mode: Mode = "snapshot"
    confirm_deletes: int = Field(default=1, ge=1, le=1000)
    event_type: str = DEFAULT_EVENT_TYPE
    remember: Duration = timedelta(days=30)
    remember_count: int = Field(default=DEFAULT_REMEMBER_COUNT, ge=1, le=MAX_REMEMBER_COUNT)
    stop_at_seen: bool = True
    incremental: IncrementalConfig | None = None

    _spec: ItemSpec = PrivateAttr()
    _list_spec: ItemSpec = PrivateAttr()
    _detail_spec: DetailSpec | None = PrivateAttr(default=None)
    _format_options: FormatOptions = PrivateAttr()
    _page_spec: PageSpec | None = PrivateAttr(default=None)
    _delete_limit: DeleteLimit = PrivateAttr()

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v)

    @field_validator("event_type")
    @classmethod
    def _event_type(cls, v: str) -> str:
        return check_event_type(v)

    @field_validator("every", "timeout", "max_backoff", "remember")
    @classmethod
    def _positive(cls, v: timedelta | None) -> timedelta | None:
        return None if v is None else positive(v)

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        return check_ca_file(v)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        check_headers(v)
        return v

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
        return check_path(v)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | list[str]) -> str | list[str]:
        paths = [v] if isinstance(v, str) else v
        if not paths:
            raise ValueError("a composite key needs at least one path")
        for p in paths:
            check_path(p)
        return v

    @field_validator("ignore")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        for p in v:
            check_path(p)
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        for p in v:
            check_path(p)
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
        self._check_graphql()
        self._check_body_param()
        if (self.delimiter != "," or self.encoding != "utf-8") and self.format not in (
            "csv",
            "auto",
        ):
            raise ValueError("'delimiter' and 'encoding' apply only to format = \"csv\"")
        check_tls(self.ca_file, self.tls_verify)
        problem = mode_problem(self.mode, self.model_fields_set, self.paginate is not None)
        if problem is not None:
            raise ValueError(problem)
        check_incremental(
            self.mode,
            self.incremental,
            self.request_method,
            self.request_body,
            self.confirm_deletes,
        )
        return self

    def _check_graphql(self) -> None:
        if self.graphql is None:
            return
        if self.body is not None:
            raise ValueError(
                "'body' and [sources.graphql] both give the request body: the GraphQL body is "
                '{"query", "variables"}, so drop \'body\' (put values in graphql.variables)'
            )
        if "method" in self.model_fields_set and self.method != "POST":
            raise ValueError(f'[sources.graphql] is sent with POST; drop method = "{self.method}"')

    def _check_body_param(self) -> None:
        p = self.paginate
        if not isinstance(p, CursorPaginate) or p.body_param is None:
            return
        if self.request_method != "POST" or self.request_body is None:
            raise ValueError(
                "paginate.body_param puts the cursor in the JSON body: it needs "
                "[sources.graphql], or method = \"POST\" with a 'body' table"
            )
        try:
            with_body_value(self.request_body, p.body_param, "")
        except BodyPathError as exc:
            raise ValueError(f"paginate.body_param: {exc}") from None

    @property
    def request_method(self) -> str:
        """The HTTP method the source's list is asked for with (POST for GraphQL)."""
        return "POST" if self.graphql is not None else self.method

    @property
    def request_body(self) -> Any:
        """The JSON body sent with the first page (the GraphQL body, or ``body``)."""
        if self.graphql is not None:
            return graphql_body(self.graphql.query, self.graphql.variables)
        return self.body

    def model_post_init(self, context: Any, /) -> None:
        keys = [self.key] if isinstance(self.key, str) else self.key
        self._spec = ItemSpec(
            items=compile_path(self.items),
            key=tuple(compile_path(k) for k in keys),
            ignore=tuple(compile_path(p) for p in self.ignore),
            fields=tuple(compile_path(p) for p in self.fields),
        )
        self._list_spec = self._spec
        if self.detail is not None:
            # ignore and fields apply to the detail (the item); a list entry counts whole
            self._list_spec = ItemSpec(items=self._spec.items, key=self._spec.key)
            self._detail_spec = DetailSpec(
                url=parse_detail_url(self.detail.url),
                items=compile_path(self.detail.items),
                ignore=self._spec.ignore,
                fields=self._spec.fields,
                concurrency=self.detail.concurrency,
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
    def list_spec(self) -> ItemSpec:
        """How list pages are read: the item spec, or for a detail source its list entries."""
        return self._list_spec

    @property
    def detail_spec(self) -> DetailSpec | None:
        """``[sources.detail]`` compiled, or None."""
        return self._detail_spec

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
    def event_name(self) -> str | None:
        """An append source's event type when it is not ``item.created``."""
        return None if self.event_type == DEFAULT_EVENT_TYPE else self.event_type

    @property
    def seen_window(self) -> SeenWindow:
        return SeenWindow(self.remember, self.remember_count)

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
        if self.graphql is not None:
            fields["graphql"] = self.graphql.model_dump()
        if self.detail is not None:
            fields["detail"] = self.detail.model_dump(exclude={"concurrency"})
        if self.paginate is not None:
            # only when set, so adding pagination support did not re-baseline existing sources
            paginate = self.paginate.model_dump(exclude={"max_pages"})
            if paginate.get("body_param", "") is None:
                del paginate["body_param"]  # added later: unset, it must not re-baseline
            fields["paginate"] = paginate
        if self.mode != "snapshot":
            fields["mode"] = self.mode
        if self.incremental is not None:
            fields["incremental.cursor"] = self.incremental.cursor
        return fields
