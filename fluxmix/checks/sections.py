"""The `tests:` and `expect:` sections of a scenario: their schema, and the models they become.

```yaml
tests:
  - name: a large EUR payment reaches the EUR file
    inputs:                                   # inserted at a gear's input port, in this order
      - {at: price.in, body: {seq: 3, merchant: acme}}
    outputs:                                  # what came out of a gear's output port
      - from: by-currency.eur
        count: 1                              # exactly this many messages
        conditions: ['amount > 100', 'currency == "EUR"']   # every message satisfies every one
      - from: eur-file.in                     # a sink is replaced by a capture: name its input
        bodies: [{seq: 3, merchant: acme, amount: 111, currency: EUR}]   # exactly, in order
    no_output_from: [by-currency.usd, large.rejected]
expect:
  - eur-file.handled >= 1 within 60s
  - dead_letters == 0
```

`check_sections` reports every problem of both sections, with locations such as
`tests[0].outputs[1].from`, like the rest of pre-flight validation (fluxmix.validation calls it).
A test file given to `fluxmix scenario test --tests FILE` holds a `tests:` section of its own and
is checked by the same function against the scenario it tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fluxmix.checks.expect import Expectation, ExpectationSyntaxError, parse_expectation
from fluxmix.document_checks import check_unknown_keys
from fluxmix.errors import Problem
from fluxmix.gears.base import ERROR_PORT, Gear, Port
from fluxmix.gears.expressions import expression_problem
from fluxmix.problem_text import describe
from fluxmix.scenario import Endpoint, parse_endpoint
from fluxmix.suggest import did_you_mean

TEST_KEYS = ("name", "description", "inputs", "outputs", "no_output_from")
INPUT_KEYS = ("at", "body", "bodies")
OUTPUT_KEYS = ("from", "count", "conditions", "bodies")
TESTS_FILE_KEYS = ("tests",)
MAX_TEST_NAME = 200
MAX_TEST_MESSAGES = 10_000  # inputs per test: tests are examples, not load


@dataclass(frozen=True, slots=True)
class GearPorts:
    """What the sections need to know about one gear: its ports and its role."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    source: bool
    sink: bool  # has inputs, and no outputs besides `error`: replaced by a capture in tests

    @classmethod
    def of(cls, gear: type[Gear], inputs: Sequence[Port], outputs: Sequence[Port]) -> "GearPorts":
        ins = tuple(p.name for p in inputs)
        outs = tuple(p.name for p in outputs)
        return cls(ins, outs, source=gear.is_source() and not ins, sink=bool(ins) and all(p == ERROR_PORT for p in outs))

    def observable(self) -> tuple[str, ...]:
        """Ports a test can read: a sink's inputs (its capture), every other gear's outputs."""
        return self.inputs if self.sink else self.outputs


# ---------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class TestInput:
    __test__ = False  # not a pytest class, despite the name
    at: Endpoint
    bodies: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class TestOutput:
    __test__ = False  # not a pytest class, despite the name
    at: Endpoint
    count: int | None = None
    conditions: tuple[str, ...] = ()
    bodies: tuple[Mapping[str, Any], ...] | None = None


@dataclass(frozen=True, slots=True)
class ScenarioTest:
    __test__ = False  # not a pytest class, despite the name
    name: str
    inputs: tuple[TestInput, ...]
    outputs: tuple[TestOutput, ...] = ()
    no_output_from: tuple[Endpoint, ...] = ()
    description: str | None = None


def build_tests(raw_tests: Sequence[Mapping[str, Any]]) -> tuple[ScenarioTest, ...]:
    """The models of a `tests:` list that `check_sections` accepted."""
    tests = []
    for raw in raw_tests:
        inputs = tuple(
            TestInput(_endpoint(i["at"]), tuple(i["bodies"]) if "bodies" in i else (i["body"],))
            for i in raw["inputs"]
        )
        outputs = tuple(
            TestOutput(
                _endpoint(o["from"]),
                count=o.get("count"),
                conditions=tuple(_as_list(o.get("conditions"))),
                bodies=tuple(o["bodies"]) if "bodies" in o else None,
            )
            for o in raw.get("outputs") or ()
        )
        silent = tuple(_endpoint(e) for e in raw.get("no_output_from") or ())
        tests.append(ScenarioTest(raw["name"], inputs, outputs, silent, raw.get("description")))
    return tuple(tests)


def build_expectations(raw_expect: Sequence[str]) -> tuple[Expectation, ...]:
    return tuple(parse_expectation(text) for text in raw_expect)


def _endpoint(text: str) -> Endpoint:
    gear, _, port = text.partition(".")
    return Endpoint(gear, port)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


# ---------------------------------------------------------------- validation


class _Checker:
    """Collects problems; `gears` None means the gear list itself is broken (reported elsewhere)."""

    def __init__(self, gears: Mapping[str, GearPorts | None] | None, wires: Sequence[tuple[Endpoint, Endpoint]]) -> None:
        self.gears = gears
        self.wire_keys = [f"{a}->{b}" for a, b in wires]
        self.problems: list[Problem] = []

    def add(self, location: str, reason: str) -> None:
        self.problems.append(Problem(location, reason))

    # ---- tests ----

    def tests(self, value: object, base: str = "tests") -> None:
        if value is None:
            return
        if not isinstance(value, list):
            self.add(base, f"must be a list of tests (name, inputs, outputs, no_output_from); found {describe(value)}")
            return
        seen: dict[str, int] = {}
        for index, test in enumerate(value):
            self.test(test, f"{base}[{index}]", seen, index)

    def test(self, test: object, base: str, seen: dict[str, int], index: int) -> None:
        if not isinstance(test, Mapping):
            self.add(base, f"must be a mapping with name, inputs and outputs; found {describe(test)}")
            return
        self.unknown_keys(test, TEST_KEYS, base, "test")
        name = test.get("name")
        if "name" not in test:
            self.add(f"{base}.name", "required: what this test checks, e.g. 'large EUR payments reach the EUR file'")
        elif not isinstance(name, str) or not name.strip() or len(name) > MAX_TEST_NAME:
            self.add(f"{base}.name", f"must be a non-empty string of at most {MAX_TEST_NAME} characters; found {describe(name)}")
        elif name in seen:
            self.add(f"{base}.name", f"duplicate test name {name!r} (also tests[{seen[name]}])")
        else:
            seen[name] = index
        if "description" in test and not isinstance(test["description"], str):
            self.add(f"{base}.description", f"must be a string; found {describe(test['description'])}")
        inputs = test.get("inputs")
        if "inputs" not in test:
            self.add(f"{base}.inputs", "required: the messages to insert, e.g. [{at: price.in, body: {amount: 150}}]")
        elif not isinstance(inputs, list) or not inputs:
            self.add(f"{base}.inputs", f"must be a non-empty list of {{at, body}}; found {describe(inputs)}")
        else:
            total = 0
            for i, item in enumerate(inputs):
                total += self.test_input(item, f"{base}.inputs[{i}]")
            if total > MAX_TEST_MESSAGES:
                self.add(f"{base}.inputs", f"{total} messages; a test inserts at most {MAX_TEST_MESSAGES}")
        outputs = test.get("outputs")
        if outputs is not None and not isinstance(outputs, list):
            self.add(f"{base}.outputs", f"must be a list of {{from, count, conditions, bodies}}; found {describe(outputs)}")
            outputs = None
        for i, item in enumerate(outputs or ()):
            self.test_output(item, f"{base}.outputs[{i}]")
        silent = test.get("no_output_from")
        if silent is not None and not isinstance(silent, list):
            self.add(f"{base}.no_output_from", f"must be a list of gear.port; found {describe(silent)}")
            silent = None
        for i, item in enumerate(silent or ()):
            self.observable(item, f"{base}.no_output_from[{i}]")
        if not outputs and not silent and isinstance(test, Mapping) and "outputs" not in test and "no_output_from" not in test:
            self.add(base, "a test needs outputs or no_output_from: something to check")

    def test_input(self, item: object, base: str) -> int:
        if not isinstance(item, Mapping):
            self.add(base, f"must be a mapping like {{at: gear.port, body: {{...}}}}; found {describe(item)}")
            return 0
        self.unknown_keys(item, INPUT_KEYS, base, "input")
        if "at" not in item:
            self.add(f"{base}.at", "required: the input port to insert at, as gear.port")
        else:
            self.insertable(item["at"], f"{base}.at")
        has_body, has_bodies = "body" in item, "bodies" in item
        if has_body == has_bodies:
            self.add(base, "give exactly one of body (one message) or bodies (a list of messages)")
            return 0
        if has_body:
            if not isinstance(item["body"], Mapping):
                self.add(f"{base}.body", f"must be a mapping (a message body); found {describe(item['body'])}")
            return 1
        bodies = item["bodies"]
        if not isinstance(bodies, list) or not bodies:
            self.add(f"{base}.bodies", f"must be a non-empty list of mappings; found {describe(bodies)}")
            return 0
        for i, body in enumerate(bodies):
            if not isinstance(body, Mapping):
                self.add(f"{base}.bodies[{i}]", f"must be a mapping (a message body); found {describe(body)}")
        return len(bodies)

    def test_output(self, item: object, base: str) -> None:
        if not isinstance(item, Mapping):
            self.add(base, f"must be a mapping like {{from: gear.port, count: 1}}; found {describe(item)}")
            return
        self.unknown_keys(item, OUTPUT_KEYS, base, "output")
        if "from" not in item:
            self.add(f"{base}.from", "required: the output port to check, as gear.port (a sink: its input port)")
        else:
            self.observable(item["from"], f"{base}.from")
        if not any(k in item for k in ("count", "conditions", "bodies")):
            self.add(base, "give at least one of count, conditions or bodies")
        if "count" in item:
            count = item["count"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                self.add(f"{base}.count", f"must be a whole number >= 0; found {describe(count)}")
        if "conditions" in item:
            conditions = item["conditions"]
            if isinstance(conditions, str):
                conditions = [conditions]
            if not isinstance(conditions, list) or not conditions:
                self.add(f"{base}.conditions", f"must be an expression or a non-empty list of them; found {describe(item['conditions'])}")
            else:
                for i, text in enumerate(conditions):
                    where = f"{base}.conditions" if isinstance(item["conditions"], str) else f"{base}.conditions[{i}]"
                    if not isinstance(text, str):
                        self.add(where, f"must be an expression string; found {describe(text)}")
                        continue
                    reason = expression_problem(text)
                    if reason:
                        self.add(where, reason)
        if "bodies" in item:
            bodies = item["bodies"]
            if not isinstance(bodies, list):
                self.add(f"{base}.bodies", f"must be a list of message bodies (mappings); found {describe(bodies)}")
            else:
                for i, body in enumerate(bodies):
                    if not isinstance(body, Mapping):
                        self.add(f"{base}.bodies[{i}]", f"must be a mapping (a message body); found {describe(body)}")
            if isinstance(bodies, list) and isinstance(item.get("count"), int) and item["count"] != len(bodies):
                self.add(f"{base}.count", f"count {item['count']} disagrees with the {len(bodies)} bodies listed")

    # ---- endpoints ----

    def _gear(self, value: object, location: str) -> tuple[Endpoint, GearPorts] | None:
        """The endpoint and its gear's ports, or None after reporting why (or when unknowable)."""
        endpoint = parse_endpoint(value)
        if endpoint is None:
            shown = repr(value) if isinstance(value, str) else describe(value)
            self.add(location, f"{shown} is not gear.port (e.g. 'price.in')")
            return None
        if self.gears is None:
            return None
        if endpoint.gear not in self.gears:
            self.add(location, f"gear {endpoint.gear!r} is not defined{did_you_mean(endpoint.gear, self.gears)}")
            return None
        ports = self.gears[endpoint.gear]
        if ports is None:  # its type or config is reported already
            return None
        return endpoint, ports

    def insertable(self, value: object, location: str) -> None:
        found = self._gear(value, location)
        if found is None:
            return
        endpoint, ports = found
        if ports.source:
            self.add(location, f"gear {endpoint.gear!r} is a source: sources do not run in tests; insert at the input of the gear it feeds")
        elif endpoint.port not in ports.inputs:
            self.add(
                location,
                f"gear {endpoint.gear!r} has no input port {endpoint.port!r}{did_you_mean(endpoint.port, ports.inputs)} "
                f"(inputs: {', '.join(ports.inputs) or 'none'})",
            )

    def observable(self, value: object, location: str) -> None:
        found = self._gear(value, location)
        if found is None:
            return
        endpoint, ports = found
        if ports.source:
            self.add(location, f"gear {endpoint.gear!r} is a source: sources do not run in tests")
            return
        allowed = ports.observable()
        if endpoint.port in allowed:
            return
        if ports.sink:
            why = f"gear {endpoint.gear!r} is a sink, replaced by a capture in tests: name its input ({', '.join(allowed)})"
        else:
            why = f"gear {endpoint.gear!r} has no output port {endpoint.port!r} (outputs: {', '.join(allowed) or 'none'})"
        self.add(location, why + did_you_mean(endpoint.port, allowed))

    # ---- expect ----

    def expect(self, value: object) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            self.add("expect", f"must be a list of expectations like 'sink.handled >= 100 within 60s'; found {describe(value)}")
            return
        for index, text in enumerate(value):
            location = f"expect[{index}]"
            try:
                exp = parse_expectation(text)
            except ExpectationSyntaxError as exc:
                self.add(location, str(exc))
                continue
            if self.gears is None:
                continue
            if exp.kind == "gear" and exp.target not in self.gears:
                self.add(location, f"gear {exp.target!r} is not defined{did_you_mean(exp.target, self.gears)}")
            elif exp.kind == "wire" and exp.target not in self.wire_keys:
                self.add(location, f"no wire {exp.target}{did_you_mean(exp.target, self.wire_keys)} (wires: {', '.join(self.wire_keys) or 'none'})")

    def unknown_keys(self, raw: Mapping[Any, Any], allowed: Sequence[str], base: str, what: str) -> None:
        check_unknown_keys(raw, allowed, base, what, self.problems)


def check_sections(
    raw: Mapping[str, Any],
    gears: Mapping[str, GearPorts | None] | None,
    wires: Sequence[tuple[Endpoint, Endpoint]],
) -> list[Problem]:
    """Every problem in a scenario's `tests:` and `expect:` sections.

    `gears` maps each gear name to its ports (None for a gear whose ports cannot be known);
    pass None when the gear list itself is broken. `wires` are the scenario's good wires.
    """
    checker = _Checker(gears, wires)
    checker.tests(raw.get("tests"))
    checker.expect(raw.get("expect"))
    return checker.problems


def check_tests_file(
    raw: object,
    gears: Mapping[str, GearPorts | None],
    wires: Sequence[tuple[Endpoint, Endpoint]],
) -> list[Problem]:
    """Every problem in a separate tests file (a mapping with a `tests:` list) for a scenario."""
    if not isinstance(raw, Mapping):
        return [Problem("", f"a tests file must be a YAML mapping with a tests: list; found {describe(raw)}")]
    checker = _Checker(gears, wires)
    checker.unknown_keys(raw, TESTS_FILE_KEYS, "", "top-level")
    if "tests" not in raw:
        checker.add("tests", "required: a list of tests")
    else:
        checker.tests(raw["tests"])
    return checker.problems


def scenario_ports(scenario: Any, catalog: Any) -> dict[str, GearPorts | None]:
    """GearPorts of every gear of a validated Scenario."""
    ports: dict[str, GearPorts | None] = {}
    for gear in scenario.gears:
        cls = catalog.get(gear.type)
        if cls is None:
            ports[gear.name] = None
            continue
        ports[gear.name] = GearPorts.of(cls, cls.input_ports(gear.config), cls.output_ports(gear.config))
    return ports


__all__ = [
    "GearPorts",
    "ScenarioTest",
    "TestInput",
    "TestOutput",
    "build_expectations",
    "build_tests",
    "check_sections",
    "check_tests_file",
    "scenario_ports",
]
