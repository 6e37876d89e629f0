"""How problem messages show the operator's data: a value's kind, a location path, a list of names.

Shared by every pre-flight check (scenario, spec, `tests:`, `expect:`, `globals:`) so one bad
value reads the same wherever it appears, and stays short however large it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

NAMES_SHOWN = 20
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def describe(value: object) -> str:
    """A short phrase for a value of the wrong type: `a list`, `the number 1.2`, `null`."""
    if value is None:
        return "null (nothing)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):  # bounded: a whole file read as one string must not fill the log
        return f"the string {value!r}" if len(value) <= 60 else f"the string {value[:57]!r}… ({len(value)} characters)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def json_path(base: str, path: Iterable[object]) -> str:
    """`gears[0].config` + ("set", 2) -> `gears[0].config.set[2]`."""
    out = base
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{str(part)!r}]"
    return out


def name_list(items: Iterable[str]) -> str:
    """A readable list for a message; a long one (a route's thousand ports) is cut short."""
    items = list(items)
    if len(items) > NAMES_SHOWN:
        return ", ".join(items[:NAMES_SHOWN]) + f", … ({len(items)} in all)"
    return ", ".join(items) if items else "none"
