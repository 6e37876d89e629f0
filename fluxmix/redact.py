"""Keep secrets out of log lines, journal rows and status answers.

The mixer knows its secrets (the API token, NATS password and token); it registers them at start,
and every log line (both formats) and journal row passes through `redact()`, which replaces each
registered secret and the password part of any `scheme://user:password@host` URL with `***`.
This also catches a secret echoed by code we do not control (a library quoting its argv, a
gear's error message), which escaping at each call site could not.
"""

from __future__ import annotations

import re
import threading
from typing import Any

MASK = "***"
MIN_SECRET = 4  # shorter values would mask ordinary words; refuse to register them as a match
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]*:)(?P<password>[^\s/@]+)@")
_secrets: set[str] = set()
_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """From now on `redact()` masks `value` wherever it appears."""
    global _pattern
    if not value or len(value) < MIN_SECRET:
        return
    with _lock:
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)  # a secret containing another goes first
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def forget_secrets() -> None:
    """Drop every registered secret (tests start mixers in one process)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str) -> str:
    """`text` with registered secrets and URL passwords replaced by ***."""
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None else text


def redact_value(value: Any) -> Any:
    """`redact` applied to every string inside lists, tuples and dicts (keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


__all__ = ["MASK", "forget_secrets", "redact", "redact_value", "register_secret"]
