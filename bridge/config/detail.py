"""``[sources.detail]``: one request per new or changed list entry, whose answer is the item."""

from __future__ import annotations

from pydantic import Field, field_validator

from bridge.config.fields import JsonPathText, StrictModel, check_url
from bridge.core.detail import DetailFailed, parse_detail_url, sample_url

DETAIL_CONCURRENCY = 4
"""Detail requests of one poll in flight at once, by default (each also waits for its host)."""


class DetailFetch(StrictModel):
    """Fetch each new or changed item's detail from ``url`` and use it as the item."""

    url: str
    items: JsonPathText = "$"
    concurrency: int = Field(default=DETAIL_CONCURRENCY, ge=1, le=32)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            template = parse_detail_url(v)
        except DetailFailed as exc:
            raise ValueError(f"{v!r}: {exc}") from None
        check_url(sample_url(template))
        return v
