"""How every `fluxmix` command prints: one `--json` flag, one JSON printer, one table, one clock.

Tables print a missing value (None) as "-", so every row keeps its columns for `cut`/`awk` and
an empty cell is never mistaken for a value; numeric columns are right-aligned. A content hash
is shown as `fluxmix.refs.short_hash` spells it (`sha256:` and 12 digits: a reference you can
paste back).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

MISSING = "-"  # what a table cell or a time shows for None


def json_option() -> Any:
    """The `--json` flag every listing and report command takes (passed as `as_json`)."""
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def echo_json(value: Any) -> None:
    """Machine output: indented JSON, keys in the order the data has them, datetimes in ISO 8601 UTC."""
    click.echo(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):  # tuples never get here: json encodes them as lists
        return sorted(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def as_utc(value: datetime) -> datetime:
    """The store may hand back naive datetimes (SQLite drops the zone); they are UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def iso_utc(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


def human_time(value: datetime | str | None) -> str:
    """`2026-01-31 12:00:00 UTC`, from a datetime or an ISO 8601 text (the API's); "-" for None."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def human_size(size: int) -> str:
    """1023 B, 1.5 KiB, 12.0 MiB: short enough for a table column."""
    if size < 1024:
        return f"{size} B"
    amount = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        amount /= 1024
        if amount < 1024 or unit == "TiB":
            return f"{amount:.1f} {unit}"
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """The two largest units: `3d 4h`, `5m 2s`, `7s`."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes) + [f"{secs}s"]
    return " ".join(parts[:2])


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, show_headers: bool = True) -> str:
    """Columns separated by two spaces, numbers right-aligned, None as "-", no trailing blanks."""
    cells = [[(MISSING if value is None else str(value)) for value in row] for row in rows]
    widths = [max([len(h) if show_headers else 0] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [bool(cells) and all(_is_number(r[i]) for r in cells) and any(r[i] != MISSING for r in cells)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join(([line([str(h) for h in headers])] if show_headers else []) + [line(r) for r in cells])


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, show_headers: bool = True) -> None:
    text = table(headers, rows, show_headers=show_headers)
    if text:
        click.echo(text)


def _is_number(text: str) -> bool:
    return text.replace(".", "", 1).isdigit() or text == MISSING


__all__ = ["MISSING", "as_utc", "echo_json", "echo_table", "human_duration", "human_size", "human_time", "iso_utc",
           "json_option", "table"]
