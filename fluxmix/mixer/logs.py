"""The mixer's log output: human text for a terminal, or one JSON object per line for collectors.

Every line passes through fluxmix.redact, so no registered secret or URL password reaches the log.

Extra fields passed with `log.info(..., extra={...})` become key=value pairs in text and keys of
the JSON object, so one logging call serves both formats (journald, Loki and Vector parse either).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from fluxmix.redact import redact, redact_value

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        # before encoding (a secret JSON would escape) and after (values only str() shows)
        return redact(json.dumps(redact_value(obj), default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`2026-11-23T20:00:00.000Z INFO  fluxmix.mixer: msg key=value ...`"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = extra_fields(record)
        if extras:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


def configure_logging(fmt: str = "text", level: str = "info", stream: TextIO | None = None) -> None:
    """Replace the root handlers: the daemon owns its process's logging."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # watchfiles reports every filtered event in the watched directory at debug level: noise.
    logging.getLogger("watchfiles").setLevel(max(root.level, logging.INFO))
    # The API's access log is one line per scrape or poll: only shown at debug level.
    access = logging.getLogger("fluxmix.mixer.http.access")
    access.setLevel(logging.DEBUG if level.lower() == "debug" else logging.WARNING)
