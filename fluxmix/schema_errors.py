"""fluxmix's own wording for JSON Schema violations in gear configs and specs.

jsonschema's messages are not part of its API: 4.21 rewrote several (`[] is too short` became
`[] should be non-empty`), and they quote the offending value whole, however large. Operators
read these messages and tests assert them, so the common keywords are worded here, once, with a
short excerpt of the value; only rare keywords fall back to the library's text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import re

from jsonschema import ValidationError

MAX_EXCERPT = 60
"""Longest rendering of a user value inside a message."""


def excerpt(value: Any, limit: int = MAX_EXCERPT) -> str:
    """`repr(value)` cut to `limit` characters: enough to recognise it, never a whole document."""
    if isinstance(value, (dict, list)) and len(value) > 20:
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _types(expected: Any) -> str:
    names = expected if isinstance(expected, list) else [expected]
    return ", ".join(repr(name) for name in names)


def _size_word(error: ValidationError, what: str, more: bool) -> str:
    limit = error.validator_value
    if not more and limit == 1:
        return f"{excerpt(error.instance)} should be non-empty"
    bound = "at least" if not more else "at most"
    return f"{excerpt(error.instance)} should have {bound} {limit} {what}"


_WORDING: dict[str, Callable[[ValidationError], str]] = {
    "type": lambda e: f"{excerpt(e.instance)} is not of type {_types(e.validator_value)}",
    "required": lambda e: f"{excerpt(_missing(e))} is a required property",
    "minimum": lambda e: f"{excerpt(e.instance)} is less than the minimum of {e.validator_value!r}",
    "maximum": lambda e: f"{excerpt(e.instance)} is greater than the maximum of {e.validator_value!r}",
    "exclusiveMinimum": lambda e: f"{excerpt(e.instance)} is less than or equal to the minimum of {e.validator_value!r}",
    "exclusiveMaximum": lambda e: f"{excerpt(e.instance)} is greater than or equal to the maximum of {e.validator_value!r}",
    "enum": lambda e: f"{excerpt(e.instance)} is not one of {excerpt(e.validator_value, 200)}",
    "const": lambda e: f"{excerpt(e.validator_value)} was expected",
    "pattern": lambda e: f"{excerpt(e.instance)} does not match {e.validator_value!r}",
    "format": lambda e: f"{excerpt(e.instance)} is not a {e.validator_value!r}",
    "minLength": lambda e: _size_word(e, "characters", more=False),
    "maxLength": lambda e: _size_word(e, "characters", more=True),
    "minItems": lambda e: _size_word(e, "items", more=False),
    "maxItems": lambda e: _size_word(e, "items", more=True),
    "minProperties": lambda e: _size_word(e, "properties", more=False),
    "maxProperties": lambda e: _size_word(e, "properties", more=True),
    "uniqueItems": lambda e: f"{excerpt(e.instance)} has non-unique elements",
    "additionalProperties": lambda e: _unexpected_keys(e),
}


def _missing(error: ValidationError) -> str:
    """The required property that is missing: jsonschema reports one error per missing name."""
    required = error.validator_value if isinstance(error.validator_value, list) else []
    present = error.instance if isinstance(error.instance, Mapping) else {}
    missing = [name for name in required if name not in present]
    # one error per missing name, in schema order; its position is in the library's message
    for name in missing:
        if repr(name) in error.message:
            return name
    return missing[0] if missing else "?"


def _unexpected_keys(error: ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    known = set((schema.get("properties") or {}).keys())
    patterns = list((schema.get("patternProperties") or {}).keys())
    instance = error.instance if isinstance(error.instance, Mapping) else {}
    extras = [key for key in instance if key not in known]
    if patterns:
        extras = [key for key in extras if not any(re.search(p, str(key)) for p in patterns)]
        shown = ", ".join(excerpt(key) for key in extras[:5])
        return f"{shown} does not match any of the regexes: {', '.join(repr(p) for p in patterns)}"
    shown = ", ".join(excerpt(key) for key in extras[:5])
    more = f" and {len(extras) - 5} more" if len(extras) > 5 else ""
    verb = "was" if len(extras) == 1 else "were"
    return f"Additional properties are not allowed ({shown}{more} {verb} unexpected)"


def describe(error: ValidationError) -> str:
    """One line for one violation, worded by fluxmix for the common keywords."""
    word = _WORDING.get(str(error.validator))
    if word is not None:
        try:
            return word(error)
        except Exception:  # a keyword used in an unexpected shape: the library's text is still right
            pass
    text = " ".join(str(error.message).split())
    return text if len(text) <= 200 else text[:199] + "…"


__all__ = ["MAX_EXCERPT", "describe", "excerpt"]
