"""Validation against hostile or careless input: every problem at once, no NaN, bounded cost."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fluxmix.cli.main import root
from fluxmix.gears.catalog import Catalog
from fluxmix.suggest import BUDGET, RANKED, Suggester
from fluxmix.validation import validate_scenario


@pytest.fixture
def validate(fluxmix_home: Path, tmp_path: Path) -> Callable[..., Result]:
    """`fluxmix scenario|spec validate FILE` on `text`, through the real command."""
    runner = CliRunner()

    def run(text: str, kind: str = "scenario") -> Result:
        path = tmp_path / "flow.yaml"
        path.write_text(text)
        return runner.invoke(root, [kind, "validate", str(path)], catch_exceptions=False)

    return run


def error_lines(result: Result) -> list[str]:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), result.stderr
    assert "Traceback" not in result.output
    return lines


# -- every problem at once ------------------------------------------------------------------------

LARGE = """\
name: payments
gears:
  - {name: source, type: generate, config: {count: 3}}
  - {name: large, type: filter, config: {where: "amount >"}}
  - {name: sink, type: log}
wires:
  - {from: source.out, to: large.inn, transport: memory}
  - {from: large.out, to: sink.in, transport: memory}
"""


def test_a_bad_gear_config_does_not_hide_that_gears_wire_problems(validate: Callable[..., Result], tmp_path: Path) -> None:
    lines = error_lines(validate(LARGE))
    source = tmp_path / "flow.yaml"
    assert lines[0] == f"error: {source}: gears[1].config.where: invalid expression: invalid syntax at the end"
    assert lines[1] == (
        f"error: {source}: wires[0].to: gear 'large' (filter) has no input port 'inn'; did you mean 'in'? (inputs: in)"
    )
    assert len(lines) == 2


def test_ports_a_bad_config_decides_stay_quiet(validate: Callable[..., Result]) -> None:
    """route's outputs come from its routes: with those broken, a wire from one is not also blamed."""
    text = """\
name: split
gears:
  - {name: source, type: generate}
  - {name: router, type: route, config: {routes: {eur: "currency =="}}}
  - {name: sink, type: log}
wires:
  - {from: source.out, to: router.inn}
  - {from: router.eur, to: sink.in}
"""
    lines = error_lines(validate(text))
    assert [line.split(": ")[2] for line in lines] == ["gears[1].config.routes.eur", "wires[0].to"]
    assert "has no input port 'inn'; did you mean 'in'?" in lines[1]


# -- NaN and infinities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "token", "shown"),
    [
        ("scenario", LARGE.replace("{count: 3}", "{count: 3, rate: .nan}"), ".nan", "'.nan'"),
        ("scenario", LARGE.replace("{count: 3}", "{rate: -.Inf}"), "-.Inf", "'-.Inf'"),
        ("scenario", LARGE.replace("{count: 3}", "{body: {amount: 1.0e+999}}"), "1.0e+999", "'1.0e+999'"),
        ("scenario", LARGE.replace("memory}\n  - {from: large", "memory, retry_delay: .inf}\n  - {from: large"), ".inf", "'.inf'"),
        ("spec", "name: visa\nschema:\n  type: number\n  maximum: !!float nan\n", "!!float", "'nan'"),
    ],
)
def test_nan_and_infinities_are_refused_where_they_are_written(
    validate: Callable[..., Result], tmp_path: Path, kind: str, text: str, token: str, shown: str
) -> None:
    at = text.index(token)
    line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
    [error] = error_lines(validate(text, kind))
    assert error == (
        f"error: {tmp_path / 'flow.yaml'}:{line}:{column}: {shown} is not a finite number: "
        "NaN and infinities are refused (quote it to mean text)"
    )


def test_quoted_nan_is_text(validate: Callable[..., Result]) -> None:
    result = validate(LARGE.replace("{count: 3}", "{count: 3, body: {note: '.nan'}}").replace('"amount >"', '"amount > 1"').replace("large.inn", "large.in"))
    assert result.exit_code == 0, result.stderr


# -- the cost of "did you mean" -------------------------------------------------------------------


class _CountingMatcher(difflib.SequenceMatcher):  # type: ignore[type-arg]
    """Counts every candidate difflib compares a word with; stops the test past `limit`."""

    seen = 0
    limit = 0

    def real_quick_ratio(self) -> float:  # difflib's first test, once per candidate
        type(self).seen += 1
        if type(self).seen > type(self).limit:
            raise AssertionError(f"more than {type(self).limit} name comparisons")
        return super().real_quick_ratio()


def _many_gears(gears: int, bad_wires: int) -> dict[str, Any]:
    return {
        "name": "big",
        "gears": [{"name": "src", "type": "generate"}]
        + [{"name": f"gear-{i:05d}", "type": "log"} for i in range(gears)]
        + [{"name": "sink", "type": "log"}],
        "wires": [{"from": "src.out", "to": f"gear-{i:05d}.in", "transport": "memory"} for i in range(gears)]
        + [{"from": "src.out", "to": "sink.in", "transport": "memory"}]
        + [{"from": "src.out", "to": f"missing-{i:05d}.in", "transport": "memory"} for i in range(bad_wires)],
    }


def test_did_you_mean_cost_is_bounded_per_bad_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 gears and 600 wires to undefined gears: 6,000,000 comparisons (minutes) before."""
    bad = 600
    monkeypatch.setattr(_CountingMatcher, "seen", 0)
    monkeypatch.setattr(_CountingMatcher, "limit", bad * RANKED)
    monkeypatch.setattr(difflib, "SequenceMatcher", _CountingMatcher)
    problems = validate_scenario(_many_gears(10_000, bad), catalog=Catalog.default())
    assert len(problems) == bad
    assert problems[0].reason == "gear 'missing-00000' is not defined; did you mean 'gear-00000'?"
    assert 0 < _CountingMatcher.seen <= bad * RANKED
    assert all("did you mean 'gear-" in p.reason for p in problems)


def test_long_names_and_many_misspellings_stay_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 distinct misspellings of 50-character names: every problem reported, comparisons capped."""
    monkeypatch.setattr(_CountingMatcher, "seen", 0)
    monkeypatch.setattr(_CountingMatcher, "limit", BUDGET)
    monkeypatch.setattr(difflib, "SequenceMatcher", _CountingMatcher)
    stem = "payment-processing-pipeline-stage-"
    raw = {
        "name": "long",
        "gears": [{"name": "src", "type": "generate"}] + [{"name": f"{stem}{i:05d}-node", "type": "log"} for i in range(40)],
        "wires": [{"from": "src.out", "to": f"{stem}{i:05d}-node.in", "transport": "memory"} for i in range(40)]
        + [{"from": "src.out", "to": f"{stem}{i:05d}-nod.in", "transport": "memory"} for i in range(2000)],
    }
    problems = validate_scenario(raw, catalog=Catalog.default())
    assert len(problems) == 2000
    assert problems[0].reason == f"gear '{stem}00000-nod' is not defined; did you mean '{stem}00000-node'?"
    assert problems[-1].reason == f"gear '{stem}01999-nod' is not defined"  # the budget was spent by then
    assert _CountingMatcher.seen <= BUDGET


def test_suggestions_among_many_names_still_find_the_near_miss() -> None:
    names = [f"gear-{i:05d}" for i in range(10_000)] + ["sink", "payments-archive", "zebra"]
    suggester = Suggester(names)
    assert len(suggester.candidates("snk")) <= RANKED
    assert suggester.closest("snk") == "sink"  # a typo in the middle
    assert suggester.closest("paymnts-archive") == "payments-archive"
    assert suggester.closest("xpayments-archive") == "payments-archive"  # a typo at the start: suffix order
    near = suggester.closest("gear-0001")  # one digit short: one of many names one insertion away
    assert near is not None and difflib.SequenceMatcher(None, "gear-0001", near).ratio() >= 0.9
    assert suggester.closest("qqqqqqqq") is None
    # Small sets are compared whole, exactly as difflib does.
    assert Suggester(["source", "sink"]).candidates("x") == ["sink", "source"]


class _CountingList(list):  # type: ignore[type-arg]
    """A list that counts how often it is walked."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        type(self).walks += 1
        return super().__iter__()


def test_many_cycles_are_reported_in_one_pass_over_the_wires(monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 two-gear cycles walked every wire once per cycle (25 million steps); now a fixed number of passes."""
    from fluxmix import validation
    from fluxmix.scenario import Endpoint

    pairs = 500
    wires = _CountingList()
    for i in range(0, 2 * pairs, 2):
        a, b = f"g{i:05d}", f"g{i + 1:05d}"
        wires.append(validation._WireInfo(i, Endpoint(a, "out"), Endpoint(b, "in")))
        wires.append(validation._WireInfo(i + 1, Endpoint(b, "out"), Endpoint(a, "in")))
    state = validation._State()
    monkeypatch.setattr(_CountingList, "walks", 0)
    validation._check_cycles(wires, state)
    assert len(state.problems) == pairs
    assert state.problems[0].location == "wires[0]" and state.problems[-1].location == f"wires[{2 * pairs - 2}]"
    assert "g00000 -> g00001 -> g00000 (wires [0], [1])" in state.problems[0].reason
    assert _CountingList.walks <= 3
