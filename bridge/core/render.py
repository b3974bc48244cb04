"""What a listener's request body is: the pollbridge envelope, a CloudEvent, or a Jinja2 template.

Templates are compiled once at configuration load and rendered per event in Jinja2's immutable
sandbox: a template can read the event, never change it or reach Python internals. A template
that fails on an event raises :class:`RenderFailed`; the caller treats that as a delivery failure
that retrying cannot fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import jinja2
import orjson
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.core.payload import (
    CLOUDEVENTS_CONTENT_TYPE,
    build_cloudevent,
    build_payload,
    event_envelope,
)
from bridge.models import Event

FormatKind = Literal["pollbridge", "cloudevents", "template"]

JSON_CONTENT_TYPE = "application/json"
_JSON_TYPE = re.compile(r"^\s*(application|text)/([\w.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)
_TEMPLATE_FILENAME = "<template>"
_OUTPUT_EXCERPT = 200

# ChainableUndefined: a missing field renders as "" (also ``a.b.c`` below a missing ``a``), so a
# template written for updates still renders for creations, whose ``data.before`` is null.
_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.ChainableUndefined, autoescape=False, keep_trailing_newline=True
)


class RenderFailed(ValueError):
    """The body could not be built for this event; the message says why and where."""


@dataclass(frozen=True)
class BodyFormat:
    """How a listener's body is built, and its content type."""

    kind: FormatKind = "pollbridge"
    content_type: str = JSON_CONTENT_TYPE
    template: jinja2.Template | None = field(default=None, compare=False, repr=False)
    label: str = ""
    """Where the template came from, for messages: ``template`` or ``template_file "x.j2"``."""


def is_json_content_type(content_type: str) -> bool:
    """``application/json``, ``text/json`` and any ``…+json`` type."""
    return bool(_JSON_TYPE.match(content_type))


def compile_template(source: str, label: str = "template") -> jinja2.Template:
    """Compile a template once; raise ValueError naming the line of a syntax error."""
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"{label}, line {exc.lineno}: {exc.message}") from None


def default_content_type(kind: FormatKind) -> str:
    return CLOUDEVENTS_CONTENT_TYPE if kind == "cloudevents" else JSON_CONTENT_TYPE


def render_body(fmt: BodyFormat, event: Event) -> bytes:
    """The exact bytes POSTed for ``event``; raise :class:`RenderFailed` when a template fails."""
    if fmt.kind == "pollbridge":
        return build_payload(event)
    if fmt.kind == "cloudevents":
        return build_cloudevent(event)
    if fmt.template is None:
        raise RenderFailed("a template listener has no compiled template")
    envelope = event_envelope(event)
    try:
        text = fmt.template.render(envelope, event=envelope)
    except Exception as exc:
        # A user's template can fail in any way (undefined filter argument, type error,
        # sandbox refusal, division by zero): all of them are this event's failure, not ours.
        line = _template_line(exc.__traceback__)
        where = f"{fmt.label or 'template'}" + (f", line {line}" if line else "")
        raise RenderFailed(f"{where}: {type(exc).__name__}: {exc}") from exc
    body = text.encode()
    if is_json_content_type(fmt.content_type):
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            excerpt = text[:_OUTPUT_EXCERPT] + ("…" if len(text) > _OUTPUT_EXCERPT else "")
            raise RenderFailed(
                f"{fmt.label or 'template'} rendered invalid JSON for content type "
                f"{fmt.content_type} ({exc}); output: {excerpt!r}"
            ) from None
    return body


def _template_line(tb: TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
