"""``[sources.incremental]``: ask only for the items changed since a cursor taken from the data."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import PrivateAttr, field_validator, model_validator

from bridge.config.fields import Duration, JsonPathText, Param, StrictModel, never_or_duration
from bridge.core.bodypath import BodyPathError, with_body_value
from bridge.core.durations import format_duration
from bridge.core.incremental import IncrementalSpec, check_format, parse_start
from bridge.core.paths import compile_path
from bridge.core.routing import compile_match

_BODY_PATH = re.compile(r"^[A-Za-z_$][\w$-]*(\.[A-Za-z_$][\w$-]*)*$")


class IncrementalConfig(StrictModel):
    """How an incremental source asks for changes and reads its cursor."""

    cursor: JsonPathText
    param: Param | None = None
    body: str | None = None
    """A dotted path into the source's JSON ``body`` (e.g. ``variables.since``)."""
    format: str = "iso8601"
    start: str = "now"
    lookback: Duration = timedelta(0)
    deleted_when: str | None = None
    reconcile_every: Duration | None = None

    _spec: IncrementalSpec = PrivateAttr()

    @field_validator("cursor")
    @classmethod
    def _cursor(cls, v: str) -> str:
        if v.strip() == "$":
            raise ValueError('must select a value inside the item, e.g. "$.updated_at"')
        return v

    @field_validator("body")
    @classmethod
    def _body(cls, v: str | None) -> str | None:
        if v is not None and not _BODY_PATH.match(v):
            raise ValueError(
                f'{v!r} is not a dotted path of names into the JSON body, e.g. "variables.since"'
            )
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        check_format(v)
        return v

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        parse_start(v)
        return v

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, v: timedelta) -> timedelta:
        if v < timedelta(0):
            raise ValueError("must not be negative")
        return v

    @field_validator("reconcile_every", mode="before")
    @classmethod
    def _reconcile(cls, v: Any) -> Any:
        return never_or_duration(v)

    @field_validator("reconcile_every")
    @classmethod
    def _reconcile_positive(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v.total_seconds() <= 0:
            raise ValueError('must be greater than zero (or "never")')
        return v

    @field_validator("deleted_when")
    @classmethod
    def _deleted_when(cls, v: str | None) -> str | None:
        if v is not None:
            compile_match(v)
        return v

    @model_validator(mode="after")
    def _one_target(self) -> IncrementalConfig:
        if (self.param is None) == (self.body is None):
            raise ValueError(
                "give exactly one of 'param' (a query parameter, e.g. \"updated_since\") or "
                "'body' (a dotted path into the JSON body, e.g. \"variables.since\")"
            )
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._spec = IncrementalSpec(
            cursor=compile_path(self.cursor),
            format=self.format,
            param=self.param,
            body_path=None if self.body is None else tuple(self.body.split(".")),
            start=parse_start(self.start),
            lookback=self.lookback,
            deleted_when=None if self.deleted_when is None else compile_match(self.deleted_when),
            reconcile_every=self.reconcile_every,
        )

    @property
    def spec(self) -> IncrementalSpec:
        """The table as plain values (compiled once at load)."""
        return self._spec

    def summary_doc(self) -> dict[str, Any]:
        """The table for ``check --json``, durations as written in the configuration."""
        return {
            **self.model_dump(exclude={"lookback", "reconcile_every"}),
            "lookback": format_duration(self.lookback),
            "reconcile_every": (
                None if self.reconcile_every is None else format_duration(self.reconcile_every)
            ),
        }

    def describe(self) -> str:
        """One line for ``pollbridge check``."""
        sent = f"param {self.param}" if self.param is not None else f"body.{self.body}"
        parts = [
            f"cursor {self.cursor} ({self.format}) sent as {sent}",
            f"start {self.start}",
            f"lookback {format_duration(self.lookback)}",
        ]
        if self.deleted_when is not None:
            parts.append(f"deleted_when {self.deleted_when}")
        parts.append(
            "reconcile never"
            if self.reconcile_every is None
            else f"reconcile every {format_duration(self.reconcile_every)}"
        )
        return ", ".join(parts)


def check_incremental(
    mode: str,
    incremental: IncrementalConfig | None,
    method: str,
    body: Any,
    confirm_deletes: int,
) -> None:
    """The source-level rules of ``mode`` and ``[sources.incremental]`` (ValueError)."""
    if mode == "incremental" and confirm_deletes > 1:
        # a window never lists what is missing; only a reconcile poll could count misses,
        # and one a day is too seldom to confirm a blink
        raise ValueError(
            "'confirm_deletes' applies to complete lists: an incremental source deletes "
            "only through deleted_when or a reconcile poll"
        )
    if mode == "incremental" and incremental is None:
        raise ValueError(
            'mode = "incremental" needs a [sources.incremental] table (at least cursor and '
            "param or body)"
        )
    if mode != "incremental" and incremental is not None:
        raise ValueError(
            f'[sources.incremental] applies only to mode = "incremental", not {mode!r}'
        )
    if incremental is None or incremental.body is None:
        return
    if method != "POST":
        raise ValueError(
            'incremental.body puts the cursor in the JSON body: it needs method = "POST"'
        )
    try:
        with_body_value(body, incremental.body, "")
    except BodyPathError as exc:
        raise ValueError(f"incremental.body: {exc}") from None
