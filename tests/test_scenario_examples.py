"""The example scenarios in scenarios/ validate against the real built-in catalog."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmix.gears.catalog import Catalog
from fluxmix.loading import parse_scenario, read_document
from fluxmix.runtime import MemoryCheckpoints, Runtime
from fluxmix.scenario import Scenario
from fluxmix.transports.memory import MemoryBroker
from fluxmix.scenario_yaml import load_yaml
from fluxmix.validation import validate_scenario

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.default()


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"hello.yaml", "payments.yaml", "fanout.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path: Path, catalog: Catalog) -> None:
    raw = load_yaml(read_document(path), str(path))
    assert [str(p) for p in validate_scenario(raw, catalog=catalog)] == []
    scenario = parse_scenario(read_document(path), str(path), catalog=catalog)
    assert scenario.name == path.stem


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_outputs_are_relative(path: Path, catalog: Catalog) -> None:
    """Examples write under out/ of the mixer's working directory, never to absolute paths."""
    scenario = parse_scenario(read_document(path), str(path), catalog=catalog)
    for gear in scenario.gears:
        if "path" in gear.config:
            assert not Path(gear.config["path"]).is_absolute()
            assert gear.config["path"].startswith("out/")


def test_hello_uses_memory_wires_only(catalog: Catalog) -> None:
    path = next(p for p in EXAMPLES if p.name == "hello.yaml")
    scenario = parse_scenario(read_document(path), str(path), catalog=catalog)
    assert scenario.transports == {"memory"}
    assert [g.type for g in scenario.gears] == ["generate", "map", "log", "file-out"]


def test_payments_uses_standard_wires(catalog: Catalog) -> None:
    path = next(p for p in EXAMPLES if p.name == "payments.yaml")
    scenario = parse_scenario(read_document(path), str(path), catalog=catalog)
    assert scenario.transports == {"standard"}
    assert {g.type for g in scenario.gears} >= {"generate", "filter", "route", "file-out"}


def test_fanout_fans_out_and_in(catalog: Catalog) -> None:
    path = next(p for p in EXAMPLES if p.name == "fanout.yaml")
    scenario = parse_scenario(read_document(path), str(path), catalog=catalog)
    sources = [str(w.source) for w in scenario.wires]
    targets = [str(w.target) for w in scenario.wires]
    assert any(sources.count(s) > 1 for s in sources), "one output feeds several wires"
    assert any(targets.count(t) > 1 for t in targets), "several outputs feed one input"


# ---------------------------------------------------------------- the examples run



def unpaced_on_memory(scenario: Scenario) -> Scenario:
    """The same topology without `rate` (tests stay short) and on memory wires (no NATS needed)."""
    gears = tuple(
        dataclasses.replace(g, config={k: v for k, v in g.config.items() if k != "rate"}) for g in scenario.gears
    )
    wires = tuple(
        dataclasses.replace(w, transport="memory", options={k: v for k, v in w.options.items() if k != "queue_size"})
        for w in scenario.wires
    )
    return dataclasses.replace(scenario, gears=gears, wires=wires)


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def run_example(name: str, catalog: Catalog, done: Callable[[], bool]) -> None:
    path = next(p for p in EXAMPLES if p.name == name)
    scenario = unpaced_on_memory(parse_scenario(read_document(path), str(path), catalog=catalog))
    runtime = Runtime(
        scenario, "0" * 64, catalog=catalog, brokers={"memory": MemoryBroker(queue_size=8)}, checkpoints=MemoryCheckpoints()
    )
    await runtime.build()
    await runtime.start()
    try:
        async def until_done() -> None:
            while not done():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(until_done(), 60)
    finally:
        await runtime.stop()


async def test_hello_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog: Catalog) -> None:
    monkeypatch.chdir(tmp_path)  # file-out paths are relative to the mixer's working directory
    out = tmp_path / "out" / "hello.jsonl"
    await run_example("hello.yaml", catalog, lambda: len(json_lines(out)) >= 20)
    rows = json_lines(out)
    assert [r["seq"] for r in rows] == list(range(1, 21))
    assert rows[2]["message"] == "hello, world #3" and rows[2]["source"] == "hello-scenario"


async def test_payments_routes_large_payments_by_currency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog: Catalog
) -> None:
    monkeypatch.chdir(tmp_path)
    expected: dict[str, list[int]] = {"eur": [], "usd": [], "other": []}
    for seq in range(1, 601):
        amount, currency = (seq * 37) % 250, ["EUR", "USD", "GBP"][seq % 3]
        if amount > 100:
            expected[{"EUR": "eur", "USD": "usd"}.get(currency, "other")].append(seq)
    files = {key: tmp_path / "out" / f"payments-{key}.jsonl" for key in expected}
    total = sum(map(len, expected.values()))
    await run_example("payments.yaml", catalog, lambda: sum(len(json_lines(f)) for f in files.values()) >= total)
    for key, path in files.items():
        rows = json_lines(path)
        assert sorted(r["seq"] for r in rows) == expected[key], key
        assert all(r["amount"] > 100 for r in rows)


async def test_fanout_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog: Catalog) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "fanout-archive.jsonl"
    await run_example("fanout.yaml", catalog, lambda: len(json_lines(out)) >= 60)
    rows = json_lines(out)
    assert sorted(r["seq"] for r in rows if r["kind"] == "order") == list(range(1, 51))
    assert sorted(r["seq"] for r in rows if r["kind"] == "refund") == list(range(1, 11))


async def test_payments_carries_tests_that_pass_and_expectations(catalog: Catalog) -> None:
    """`fluxmix scenario test scenarios/payments.yaml` passes; its expectations parse."""
    from fluxmix.checks.runner import run_tests
    from fluxmix.checks.sections import build_expectations, build_tests

    path = next(p for p in EXAMPLES if p.name == "payments.yaml")
    scenario = parse_scenario(read_document(path), str(path), catalog=catalog)
    tests = build_tests(scenario.tests)
    assert len(tests) >= 3
    results = await run_tests(scenario, tests, catalog=catalog)
    assert [(r.name, r.failures, r.error) for r in results if not r.passed] == []
    assert len(build_expectations(scenario.expect)) >= 2
