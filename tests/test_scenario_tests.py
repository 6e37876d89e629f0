"""`tests:` in a scenario and `fluxmix scenario test`: passing and failing suites, diffs, JUnit."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fluxmix.checks.sections import build_tests
from fluxmix.checks.runner import run_tests
from fluxmix.cli.main import root
from fluxmix.gears.catalog import Catalog
from fluxmix.loading import parse_scenario
from fluxmix.scenario_yaml import load_yaml
from fluxmix.validation import validate_scenario

# A filter -> route -> map chain through several gears, ending in two sinks.
CHAIN = """\
name: chain
gears:
  - name: source
    type: generate
    config: {count: 5}
  - name: big
    type: filter
    config: {where: 'amount >= 100'}
  - name: split
    type: route
    config:
      routes: {eu: 'region == "eu"'}
  - name: tag
    type: map
    config:
      set: {label: {expr: 'f"{region}-{amount}"'}}
      drop: [secret]
  - name: eu-file
    type: file-out
    config: {path: out/eu.jsonl}
  - name: rest-log
    type: log
wires:
  - {from: source.out, to: big.in, transport: memory}
  - {from: big.out, to: split.in, transport: memory}
  - {from: split.eu, to: tag.in, transport: memory}
  - {from: tag.out, to: eu-file.in, transport: memory}
  - {from: split.default, to: rest-log.in, transport: memory}
"""

PASSING = CHAIN + """\
tests:
  - name: a big eu payment is tagged and reaches the eu file
    inputs:
      - {at: big.in, body: {amount: 150, region: eu, secret: s3}}
    outputs:
      - {from: split.eu, count: 1, conditions: ['amount == 150']}
      - {from: tag.out, conditions: ['label == "eu-150"', 'not has("secret")']}
      - {from: eu-file.in, bodies: [{amount: 150, region: eu, label: eu-150}]}
    no_output_from: [split.default, big.rejected, rest-log.in]
  - name: small payments stop at the filter
    inputs:
      - {at: big.in, bodies: [{amount: 5, region: eu}, {amount: 7, region: us}]}
    outputs:
      - {from: big.rejected, count: 2}
    no_output_from: [split.eu, split.default, eu-file.in, rest-log.in]
  - name: other regions go to the log
    inputs:
      - {at: split.in, body: {amount: 300, region: us}}
    outputs:
      - {from: rest-log.in, count: 1, conditions: 'region == "us"'}
    no_output_from: [eu-file.in]
"""

FAILING = CHAIN + """\
tests:
  - name: passes
    inputs: [{at: big.in, body: {amount: 150, region: eu}}]
    outputs: [{from: eu-file.in, count: 1}]
  - name: wrong label and a silent port that is not silent
    inputs:
      - {at: big.in, bodies: [{amount: 150, region: eu}, {amount: 120, region: us}]}
    outputs:
      - {from: tag.out, count: 1, conditions: ['label == "eu-999"']}
      - {from: eu-file.in, bodies: [{amount: 150, region: eu, label: eu-151}]}
    no_output_from: [rest-log.in]
"""


@pytest.fixture
def run(tmp_path: Path, fluxmix_home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(root, list(args), catch_exceptions=False)

    return invoke


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_passing_suite_exits_0_with_a_line_per_test(tmp_path: Path, run: Any) -> None:
    path = write(tmp_path, "chain.yaml", PASSING)
    result = run("scenario", "test", str(path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["PASS", "PASS", "PASS"]
    assert "a big eu payment is tagged and reaches the eu file" in lines[0]
    assert lines[-1].endswith("3 of 3 tests passed")
    assert not (tmp_path / "out").exists(), "sinks are captured, never run"


def test_failing_suite_exits_1_and_says_which_message_and_condition(tmp_path: Path, run: Any) -> None:
    path = write(tmp_path, "chain.yaml", FAILING)
    junit = tmp_path / "report.xml"
    result = run("scenario", "test", str(path), "--junit", str(junit))
    assert result.exit_code == 1, result.output
    out = result.output
    assert out.splitlines()[0].startswith("PASS  passes")
    assert "FAIL  wrong label and a silent port that is not silent" in out
    assert 'tag.out: message 1 of 1: condition `label == "eu-999"` is false; body {"amount": 150, "label": "eu-150", "region": "eu"}' in out
    assert "eu-file.in: bodies differ (expected 1 message, got 1):" in out
    assert '-{"amount": 150, "label": "eu-151", "region": "eu"}' in out
    assert '+{"amount": 150, "label": "eu-150", "region": "eu"}' in out
    assert 'rest-log.in: expected no output, got 1 message: {"amount": 120, "region": "us"}' in out
    assert out.splitlines()[-1].endswith("1 of 2 tests passed")

    tree = ET.parse(junit)  # a standard XML parser reads it
    suite = tree.getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "chain"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["passes", "wrong label and a silent port that is not silent"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "label == \"eu-999\"" in (failure.text or "")


def test_json_report(tmp_path: Path, run: Any) -> None:
    path = write(tmp_path, "chain.yaml", FAILING)
    result = run("scenario", "test", str(path), "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False and (data["passed"], data["failed"]) == (1, 1)
    assert [t["verdict"] for t in data["tests"]] == ["pass", "fail"]
    assert data["tests"][1]["outputs"]["rest-log.in"] == [{"amount": 120, "region": "us"}]


def test_tests_file_replaces_the_scenarios_tests(tmp_path: Path, run: Any) -> None:
    path = write(tmp_path, "chain.yaml", CHAIN)
    tests = write(tmp_path, "chain-tests.yaml", "tests:\n" + PASSING.split("tests:\n", 1)[1])
    assert run("scenario", "test", str(path)).exit_code == 2  # no tests of its own
    result = run("scenario", "test", str(path), "--tests", str(tests))
    assert result.exit_code == 0, result.output


def test_tests_naming_unknown_gears_and_ports_are_validation_problems(tmp_path: Path, run: Any) -> None:
    bad = CHAIN + """\
tests:
  - name: typos
    inputs:
      - {at: bgi.in, body: {amount: 1}}
      - {at: source.in, body: {amount: 1}}
    outputs:
      - {from: split.euu, count: 1, condition: x}
      - {from: eu-file.out, conditions: ['amount >']}
    no_output_from: [tag.in]
"""
    path = write(tmp_path, "bad.yaml", bad)
    result = CliRunner().invoke(root, ["scenario", "test", str(path)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {path}: tests[0].inputs[0].at: gear 'bgi' is not defined; did you mean 'big'?",
        f"error: {path}: tests[0].inputs[1].at: gear 'source' is a source: sources do not run in tests; insert at the input of the gear it feeds",
        f"error: {path}: tests[0].outputs[0].condition: unknown output key 'condition'; did you mean 'conditions'? (allowed: from, count, conditions, bodies)",
        f"error: {path}: tests[0].outputs[0].from: gear 'split' has no output port 'euu' (outputs: eu, default, error); did you mean 'eu'?",
        f"error: {path}: tests[0].outputs[1].from: gear 'eu-file' is a sink, replaced by a capture in tests: name its input (in)",
        f"error: {path}: tests[0].outputs[1].conditions[0]: invalid expression: invalid syntax at the end",
        f"error: {path}: tests[0].no_output_from[0]: gear 'tag' has no output port 'in' (outputs: out, error)",
    ]
    # `scenario validate` reports the same problems: the sections are part of the scenario
    assert CliRunner().invoke(root, ["scenario", "validate", str(path)]).exit_code == 2


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("tests: 3", "tests: must be a list of tests"),
        ("tests: [{name: x, inputs: []}]", "tests[0].inputs: must be a non-empty list"),
        ("tests: [{name: x, inputs: [{at: big.in, body: {}, bodies: [{}]}], outputs: [{from: big.out, count: 1}]}]",
         "tests[0].inputs[0]: give exactly one of body"),
        ("tests: [{name: x, inputs: [{at: big.in, body: {}}]}]", "tests[0]: a test needs outputs or no_output_from"),
        ("tests: [{name: x, inputs: [{at: big.in, body: {}}], outputs: [{from: big.out}]}]",
         "tests[0].outputs[0]: give at least one of count, conditions or bodies"),
        ("tests: [{name: x, inputs: [{at: big.in, body: {}}], outputs: [{from: big.out, count: 2, bodies: [{}]}]}]",
         "tests[0].outputs[0].count: count 2 disagrees with the 1 bodies listed"),
        ("tests: [{name: x, inputs: [{at: big.in, body: {}}], no_output_from: [big.out]},"
         " {name: x, inputs: [{at: big.in, body: {}}], no_output_from: [big.out]}]",
         "tests[1].name: duplicate test name 'x' (also tests[0])"),
    ],
)
def test_tests_schema(section: str, expected: str) -> None:
    raw = load_yaml((CHAIN + section + "\n").encode(), "chain.yaml")
    problems = [str(p) for p in validate_scenario(raw, catalog=Catalog.default())]
    assert any(p.startswith(expected) for p in problems), problems


def test_no_output_from_fails_only_when_something_came_out() -> None:
    scenario = parse_scenario(PASSING.encode(), "chain.yaml")
    quiet = build_tests([{"name": "q", "inputs": [{"at": "big.in", "body": {"amount": 1, "region": "eu"}}],
                          "no_output_from": ["big.out", "split.eu"]}])
    loud = build_tests([{"name": "l", "inputs": [{"at": "big.in", "body": {"amount": 500, "region": "eu"}}],
                         "no_output_from": ["big.rejected", "split.eu"]}])
    import asyncio

    ok, bad = asyncio.run(run_tests(scenario, quiet + loud, catalog=Catalog.default()))
    assert ok.passed and ok.failures == []
    assert not bad.passed
    assert bad.failures == ['split.eu: expected no output, got 1 message: {"amount": 500, "region": "eu"}']


def test_a_failing_gear_shows_up_at_its_error_port_and_in_the_notes() -> None:
    scenario = parse_scenario(CHAIN.encode(), "chain.yaml")
    tests = build_tests([{"name": "missing field", "inputs": [{"at": "big.in", "body": {"region": "eu"}}],
                          "outputs": [{"from": "big.out", "count": 1}]}])
    import asyncio

    (result,) = asyncio.run(run_tests(scenario, tests, catalog=Catalog.default()))
    assert result.failures[0] == "big.out: expected 1 message, got 0"
    assert result.outputs["big.error"] == [{"region": "eu"}]
    assert any("gear big:" in note and "amount" in note for note in result.notes)


def test_the_command_as_a_user_runs_it(tmp_path: Path, fluxmix_home: Path) -> None:
    """Exit codes of the real `fluxmix` process: 0 all pass, 1 a failure, 2 invalid input."""
    good, bad = write(tmp_path, "good.yaml", PASSING), write(tmp_path, "bad.yaml", FAILING)
    invalid = write(tmp_path, "invalid.yaml", CHAIN + "tests: [{name: x}]\n")

    def fluxmix(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(sys.executable).parent / "fluxmix"), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    assert fluxmix("scenario", "test", str(good)).returncode == 0
    failed = fluxmix("scenario", "test", str(bad))
    assert failed.returncode == 1 and "FAIL  wrong label" in failed.stdout and "Traceback" not in failed.stderr
    refused = fluxmix("scenario", "test", str(invalid))
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [f"error: {invalid}: tests[0].inputs: required: the messages to insert, e.g. [{{at: price.in, body: {{amount: 150}}}}]",
                                           f"error: {invalid}: tests[0]: a test needs outputs or no_output_from: something to check"]
