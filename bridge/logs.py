"""Logging set-up: one line per record, secrets redacted before anything is written."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STD and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Replaces every configured secret value in a record (message, fields, traceback) with ``***``."""

    def __init__(self, redact: Callable[[str], str]):
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redact(value))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True


MAX_TEXT_MESSAGE = 2000
"""A text log line's message is cut here: an error quoting a whole page stays readable."""

# Control characters but tab written as escapes: a response excerpt quoted in a message (an HTML
# error page) must not break one log entry into many lines, nor forge a second entry.
_ESCAPES = {i: f"\\x{i:02x}" for i in range(32)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\t",
    0x7F: "\\x7f",
}


def one_line(text: str, limit: int = MAX_TEXT_MESSAGE) -> str:
    """``text`` on one line (control characters escaped), at most ``limit`` characters."""
    text = text.translate(_ESCAPES)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value…`` — readable in a terminal and in journald.

    One entry is one line: the message and the fields are escaped and capped (a traceback,
    shown only for unexpected errors, follows on its own lines). The time is UTC
    (``2026-11-23 12:00:05.120Z``), as in the JSON lines and in every CLI table, so a log line
    and ``pollbridge events`` can be matched on a server in any zone."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        return f"{moment:%Y-%m-%d %H:%M:%S}.{int(record.msecs):03d}Z"

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _extras(record)
        if fields:
            text = " ".join(f"{k}={one_line(str(v), 200)}" for k, v in fields.items())
            head, sep, trace = line.partition("\n")
            line = f"{head} {text}{sep}{trace}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, then the fields
    (``source``, ``listener``, ``event``…) and ``exception`` when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            doc.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        return orjson.dumps(doc, default=str).decode()


def configure_logging(
    level: str, redact: Callable[[str], str] | None = None, log_format: str = "text"
) -> None:
    """Send pollbridge's logs to stderr at ``level`` as ``text`` or ``json`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if redact is not None:
        handler.addFilter(RedactingFilter(redact))
    root = logging.getLogger("pollbridge")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # apscheduler logs every job run at INFO; keep its warnings only, in the same format
    for name in ("apscheduler", "httpx"):
        library = logging.getLogger(name)
        library.setLevel(logging.WARNING)
        library.handlers[:] = [handler]
        library.propagate = False
