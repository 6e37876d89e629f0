"""One set of CLI output helpers (cli/output.py) and one spelling of a short hash (refs.short_hash)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fluxmix.cli.output import MISSING, echo_json, human_duration, human_time, table
from fluxmix.refs import HashRef, parse_ref, short_hash

ROOT = Path(__file__).resolve().parent.parent
HEX = "ab" * 32


def test_a_table_prints_none_as_a_dash_and_keeps_its_columns() -> None:
    text = table(["NAME", "COUNT", "NOTE"], [["a", 10, None], ["bb", 2, "x"]])
    assert text.splitlines() == ["NAME  COUNT  NOTE", "a        10  -", "bb        2  x"]
    assert [line.split() for line in text.splitlines()[1:]] == [["a", "10", MISSING], ["bb", "2", "x"]]


def test_a_table_without_headers_or_rows() -> None:
    assert table(["A", "B"], [["x", None]], show_headers=False) == "x  -"
    assert table(["A", "B"], []) == "A  B"


def test_json_keeps_the_order_of_the_data_and_writes_datetimes_in_utc(capsys: pytest.CaptureFixture[str]) -> None:
    echo_json({"b": 1, "a": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "p": Path("/x")})
    out = capsys.readouterr().out
    assert list(json.loads(out)) == ["b", "a", "p"]
    assert json.loads(out)["a"] == "2026-01-02T03:04:05Z"


def test_times_and_durations_read_the_same_from_the_store_and_the_api() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert human_time(when) == human_time(when.isoformat()) == "2026-01-02 03:04:05 UTC"
    assert human_time(None) == MISSING and human_time("not a time") == "not a time"
    assert human_duration(3 * 86400 + 4 * 3600 + 5) == "3d 4h" and human_duration(7.9) == "7s"


def test_the_short_hash_is_a_reference_that_resolves() -> None:
    assert short_hash(HEX) == "sha256:" + HEX[:12]
    assert short_hash(None) == short_hash("") == "-"
    assert parse_ref(short_hash(HEX)) == HashRef(HEX[:12])


def test_the_short_hash_is_spelled_only_in_refs() -> None:
    """Anything else that cuts a digest to 12 characters spells it a second time."""
    spelled = re.compile(r"\[:12\]|\[:SHORT_HASH_DIGITS\]")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for directory in ("fluxmix", "cli", "store")
        for path in sorted((ROOT / directory).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line) and path != ROOT / "fluxmix" / "refs.py"
    ]
    assert offenders == []
