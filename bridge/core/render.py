"""What a listener's request body is: the pollbridge envelope, a CloudEvent, or a Jinja2 template.

Templates are compiled once at configuration load and rendered per event in Jinja2's immutable
sandbox: a template can read the event, never change it or reach Python internals. A template
that fails on an event raises :class:`RenderFailed`; the caller treats that as a delivery failure
that retrying cannot fix.

Listeners may come from less trusted hands, so the sandbox also bounds what one render can cost
in memory: ``range`` gives at most :data:`MAX_RANGE` numbers, an integer power at most
:data:`MAX_POWER_BITS` bits, and repeating, concatenating, padding or formatting text or lists
at most :data:`MAX_SEQUENCE` characters or items; the whole output at most :data:`MAX_OUTPUT`
characters. Time is bounded by the caller (the sender renders off the event loop with a
deadline, see :func:`render_body`'s ``deadline``).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import jinja2
import orjson
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

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

MAX_RANGE = 10_000
"""Numbers one ``range()`` may give (Jinja2's sandbox allows 100,000)."""
MAX_POWER_BITS = 65_536
"""Bits the result of an integer power may have (``9 ** 99999999`` would take minutes)."""
MAX_SEQUENCE = 1_000_000
"""Characters or items a repetition, concatenation, padding or formatting may produce."""
MAX_OUTPUT = 4_000_000
"""Characters one render may produce in all."""


class RenderFailed(ValueError):
    """The body could not be built for this event; the message says why and where."""


class RenderLimit(RenderFailed):
    """A render went past one of the bounds above (or its deadline)."""


def _check_size(size: int, what: str) -> None:
    if size > MAX_SEQUENCE:
        raise RenderLimit(f"{what} would make {size:,} characters or items, over {MAX_SEQUENCE:,}")


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


_FORMAT_WIDTH = re.compile(r"%[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(template: str) -> None:
    for match in _FORMAT_WIDTH.finditer(template):
        for part in match.groups():
            if part == "*" or (part is not None and len(part) > 6):
                raise RenderLimit(f"a format width or precision of {part} is over the limit")


def _bounded_multiply(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_POWER_BITS:
            raise RenderLimit(f"a product of ~{bits:,} bits, over {MAX_POWER_BITS:,}")
    for seq, times in ((left, right), (right, left)):
        size = _length(seq)
        if size is not None and isinstance(times, int):
            _check_size(size * times, "repeating a value")
    return left * right


def _bounded_power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        bits = exponent * math.log2(abs(base))
        if bits > MAX_POWER_BITS:
            raise RenderLimit(f"{base} ** {exponent} would have ~{bits:,.0f} bits")
    return base**exponent


def _bounded_modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_printf(left)
    return left % right


def _bounded_add(left: Any, right: Any) -> Any:
    a, b = _length(left), _length(right)
    if a is not None and b is not None:
        _check_size(a + b, "concatenating")
    return left + right


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class _Deadline(threading.local):
    """When the render on this thread must stop (monotonic seconds), checked as it runs."""

    at: float | None = None

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise RenderLimit("rendering took longer than its deadline")


_DEADLINE = _Deadline()


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to the environment's bounded join instead of a plain ``str_join``."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the size bounds of this module."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.binop_table.update(
            {"*": _bounded_multiply, "**": _bounded_power, "%": _bounded_modulo, "+": _bounded_add}
        )
        self.globals["range"] = _bounded_range
        self.globals["lipsum"] = _bounded_lipsum
        for name, bound in _BOUNDED_FILTERS.items():
            inner = self.filters[name]
            self.filters[name] = bound(inner)

    def bounded_join(self, parts: Iterable[Any]) -> str:
        texts = [str(part) for part in parts]
        _check_size(sum(map(len, texts)), "concatenating")
        return "".join(texts)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _DEADLINE.check()
        # the sandbox hands out str.format wrapped (functools.wraps: __wrapped__ is the method)
        method = getattr(obj, "__wrapped__", obj)
        owner = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        if isinstance(owner, str | bytes):
            numbers = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
            if name in _WIDTH_METHODS and numbers:
                _check_size(max(numbers), f"str.{name}")
            elif name == "replace" and len(args) >= 2 and _length(args[1]) is not None:
                _check_size(len(owner) * (1 + len(args[1])), "str.replace")
            elif name == "join" and args:
                _check_size(len(owner) * max(len(list(args[0])) - 1, 0), "str.join")
            elif name in ("format", "format_map"):
                _check_size(len(owner) + sum(len(str(a)) for a in args), f"str.{name}")
                if re.search(r"\d{7,}|:[^{}]*\{", str(owner)):
                    raise RenderLimit(
                        "a format width over the limit, or one taken from an argument"
                    )
        return super().call(context, obj, *args, **kwargs)


def _bounded_range(*args: int) -> Iterator[int]:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise RenderLimit(f"range() of {len(numbers):,} numbers, over {MAX_RANGE:,}")
    for n in numbers:
        _DEADLINE.check()
        yield n


def _bound_width(inner: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(value: Any, width: Any = 80, *args: Any, **kwargs: Any) -> Any:
        text = str(value)
        if isinstance(width, int):
            _check_size(len(text) + width * (text.count("\n") + 1), "padding or indenting")
        elif isinstance(width, str):
            _check_size(len(text) + len(width) * (text.count("\n") + 1), "indenting")
        return inner(value, width, *args, **kwargs)

    return bounded


def _bound_replace(inner: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(eval_ctx: Any, value: Any, old: Any, new: Any, *args: Any) -> Any:
        _check_size(len(str(value)) * (1 + len(str(new))), "replace")
        return inner(eval_ctx, value, old, new, *args)

    bounded.jinja_pass_arg = inner.jinja_pass_arg  # type: ignore[attr-defined]
    return bounded


def _bound_format(inner: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_printf(str(value))
        return inner(value, *args, **kwargs)

    return bounded


def _bound_join(inner: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> Any:
        items = list(value)
        sizes = 0 if attribute is not None else sum(len(str(i)) for i in items)
        _check_size(sizes + len(str(d)) * max(len(items) - 1, 0), "join")
        return inner(eval_ctx, items, d, attribute)

    bounded.jinja_pass_arg = inner.jinja_pass_arg  # type: ignore[attr-defined]
    return bounded


def _bound_tojson(inner: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(eval_ctx: Any, value: Any, indent: Any = None) -> Any:
        if (isinstance(indent, int) and indent > 64) or (
            isinstance(indent, str) and len(indent) > 64
        ):
            raise RenderLimit(f"tojson indent {indent!r} is over 64")
        return inner(eval_ctx, value, indent)

    bounded.jinja_pass_arg = inner.jinja_pass_arg  # type: ignore[attr-defined]
    return bounded


def _bound_count(inner: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(value: Any, count: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(count, int) and count > MAX_RANGE:
            raise RenderLimit(f"a batch or slice count of {count:,}, over {MAX_RANGE:,}")
        return inner(value, count, *args, **kwargs)

    return bounded


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:
    if n > 100 or max > 1000:
        raise RenderLimit("lipsum() of more than 100 paragraphs or 1,000 words each")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


_BOUNDED_FILTERS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "center": _bound_width,
    "indent": _bound_width,
    "replace": _bound_replace,
    "format": _bound_format,
    "join": _bound_join,
    "tojson": _bound_tojson,
    "batch": _bound_count,
    "slice": _bound_count,
}

# ChainableUndefined: a missing field renders as "" (also ``a.b.c`` below a missing ``a``), so a
# template written for updates still renders for creations, whose ``data.before`` is null.
_ENV = _BoundedSandbox(
    undefined=jinja2.ChainableUndefined, autoescape=False, keep_trailing_newline=True
)


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


def render_body(fmt: BodyFormat, event: Event, *, deadline: float | None = None) -> bytes:
    """The exact bytes POSTed for ``event``; raise :class:`RenderFailed` when a template fails.

    ``deadline`` (``time.monotonic()`` seconds) stops a template that is still running then,
    checked at each call, loop step and piece of output; the caller's own deadline covers the
    rest (the sender runs templates in a thread and stops waiting at it).
    """
    if fmt.kind == "pollbridge":
        return build_payload(event)
    if fmt.kind == "cloudevents":
        return build_cloudevent(event)
    if fmt.template is None:
        raise RenderFailed("a template listener has no compiled template")
    envelope = event_envelope(event)
    _DEADLINE.at = deadline
    try:
        text = _render_bounded(fmt.template, envelope)
    except RenderLimit as exc:
        raise RenderFailed(f"{fmt.label or 'template'}: {exc}") from exc
    except Exception as exc:
        # A user's template can fail in any way (undefined filter argument, type error,
        # sandbox refusal, division by zero): all of them are this event's failure, not ours.
        line = _template_line(exc.__traceback__)
        where = f"{fmt.label or 'template'}" + (f", line {line}" if line else "")
        raise RenderFailed(f"{where}: {type(exc).__name__}: {exc}") from exc
    finally:
        _DEADLINE.at = None
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


def _render_bounded(template: jinja2.Template, envelope: dict[str, Any]) -> str:
    pieces: list[str] = []
    size = 0
    for piece in template.generate(envelope, event=envelope):
        size += len(piece)
        if size > MAX_OUTPUT:
            raise RenderLimit(f"the output is over {MAX_OUTPUT:,} characters")
        _DEADLINE.check()
        pieces.append(piece)
    return "".join(pieces)


def _template_line(tb: TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
