"""Logging set-up: one line per record, secrets redacted before anything is written."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)))


class RedactingFilter(logging.Filter):
    """Replaces every configured secret value in a record's final message with ``***``."""

    def __init__(self, redact: Callable[[str], str]):
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value…`` — readable in a terminal and in journald."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STD and not k.startswith("_")}
        fields.pop("message", None)
        fields.pop("asctime", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure_logging(level: str, redact: Callable[[str], str] | None = None) -> None:
    """Send pollbridge's logs to stderr at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if redact is not None:
        handler.addFilter(RedactingFilter(redact))
    root = logging.getLogger("pollbridge")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # apscheduler logs every job run at INFO; keep its warnings only
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
