"""bridge/logs.py: text and JSON lines, with secrets redacted in message, fields and tracebacks."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest

from bridge.logs import configure_logging


@pytest.fixture
def restore_logging():
    loggers = [logging.getLogger(n) for n in ("pollbridge", "apscheduler", "httpx")]
    saved = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


def _redact(text: str) -> str:
    return text.replace("hunter2", "***")


def test_json_lines_carry_fields_and_redact_secrets(capsys, restore_logging):
    """log_format json: one object per line with time/level/logger/message and the extra fields."""
    configure_logging("info", _redact, "json")
    log = logging.getLogger("pollbridge.test")
    log.warning("poll %s failed: token %s", "orders", "hunter2", extra={"source": "orders"})
    log.info("delivery", extra={"listener": "hooks", "detail": "Bearer hunter2"})
    try:
        raise ValueError("hunter2 leaked")
    except ValueError:
        log.exception("boom")
    logging.getLogger("apscheduler.scheduler").warning("job missed by %s", "hunter2")
    logging.getLogger("apscheduler.scheduler").info("not shown")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert (
        lines[3]["logger"] == "apscheduler.scheduler" and lines[3]["message"] == "job missed by ***"
    )
    assert len(lines) == 4
    assert lines[0]["message"] == "poll orders failed: token ***"
    assert lines[0]["source"] == "orders" and lines[0]["level"] == "warning"
    assert lines[0]["logger"] == "pollbridge.test" and lines[0]["time"].endswith("+00:00")
    assert lines[1]["listener"] == "hooks" and lines[1]["detail"] == "Bearer ***"
    assert "ValueError: *** leaked" in lines[2]["exception"]
    assert "hunter2" not in json.dumps(lines)


def test_text_lines_append_fields(capsys, restore_logging):
    """log_format text: the message then key=value fields, redacted too."""
    configure_logging("info", _redact, "text")
    logging.getLogger("pollbridge.test").info("hi %s", "hunter2", extra={"source": "s1"})
    err = capsys.readouterr().err
    assert "INFO pollbridge.test: hi *** source=s1" in err


def test_text_lines_are_stamped_in_utc_like_the_cli(capsys, restore_logging, monkeypatch):
    """A text line's time is UTC with a Z, whatever the machine's zone, matching the tables."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        configure_logging("info", None, "text")
        record = logging.LogRecord("pollbridge.test", logging.INFO, "", 0, "hi", None, None)
        record.created, record.msecs = (
            1795435205.12,
            120.0,
        )  # 2026-11-23 12:00:05.120 UTC, 07:00 in New York
        logging.getLogger("pollbridge").handlers[0].handle(record)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(r"2026-11-23 12:00:05\.120Z INFO pollbridge\.test: hi", line), line


def test_a_quoted_html_error_page_stays_one_escaped_capped_line(capsys, restore_logging):
    """A poll failure quoting an HTML page is one text line: newlines escaped, length capped."""
    configure_logging("info", None, "text")
    page = "<html>\n<body>\r\n<h1>502 Bad Gateway</h1>\n" + "x" * 5000 + "\n</body></html>"
    log = logging.getLogger("pollbridge.daemon")
    log.warning("poll of source 'o' failed: HTTP 502: %s", page, extra={"source": "o\nforged"})
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err[:300]
    assert "HTTP 502: <html>\\n<body>\\r\\n<h1>502 Bad Gateway</h1>\\n" in err
    assert "…" in err and len(err) < 2300
    assert err.rstrip("\n").endswith("source=o\\nforged")


def test_a_traceback_follows_the_fields_line(capsys, restore_logging):
    """With a traceback the fields stay on the entry's first line, the trace below it."""
    configure_logging("info", None, "text")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("pollbridge.daemon").exception("unexpected", extra={"source": "s"})
    first, *rest = capsys.readouterr().err.splitlines()
    assert first.endswith("unexpected source=s")
    assert rest[0].startswith("Traceback") and "ValueError: boom" in rest[-1]
