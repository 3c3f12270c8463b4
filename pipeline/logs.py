"""One log line per event on stderr, as text for people or JSON for machines.

Under systemd, journald reads stderr; Python's stderr is line-buffered and the
handler flushes every record, so lines arrive as they happen. Structured fields
travel in ``extra={"fields": {...}}`` and render as ``key=value`` or JSON keys.

Fields and messages carry file names, which come from the inbox and may hold
newlines, terminal escape codes or bytes that are not UTF-8. One event is
always one line: in text logs the message and traceback are made printable and
every field value is quoted when it needs to be (:mod:`pipeline.files.textsafe`), so a
name can neither start a fake line nor a fake ``key=value``; JSON logs are ASCII
(``\\uXXXX`` escapes), which journald and any reader take as is.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from pipeline.files.textsafe import printable, quoted


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return dict(getattr(record, "fields", {}) or {})


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``TIME LEVEL message key=value ... [traceback="..."]``, always on one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname.lower(), printable(record.getMessage())]
        fields = _fields(record)
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        for key, value in fields.items():
            parts.append(f"{printable(key)}={quoted(value)}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, msg, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname.lower(), "msg": record.getMessage()}
        entry.update(_fields(record))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=True)  # ASCII: a name's undecodable bytes become \udcXX


def setup_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Route every photostyle logger to stderr in the chosen format (replacing earlier setup)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("PIL").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
