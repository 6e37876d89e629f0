"""Run a scenario's `tests:` offline: the real gears, in-process, on memory wires.

For each test a derived scenario is built and run by the ordinary `Runtime` (no parallel
engine): sources are left out (a test inserts its own messages), every other gear keeps its
type and config, every wire between kept gears becomes a memory wire (its `max_deliver` kept,
`retry_delay` 0 so a failing message reaches its gear's `error` port at once), a sink (a gear
with inputs and no outputs but `error`) is replaced by a capture that records what it receives,
and every output port of the other gears, `error` included, gets a capture of its own. One
injector gear emits the test's inputs in document order; then the runtime is stopped, which
drains every wire in topological order, so what the captures hold is final.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fluxmix.checks.sections import GearPorts, ScenarioTest, TestOutput, scenario_ports
from fluxmix.errors import ExpressionEvalError, FluxmixError
from fluxmix.gears.base import Gear
from fluxmix.gears.catalog import Catalog
from fluxmix.gears.expressions import compile_expression
from fluxmix.message import Message
from fluxmix.runtime import MemoryCheckpoints, Runtime
from fluxmix.scenario import Endpoint, GearSpec, Scenario, WireSpec
from fluxmix.transports.memory import MemoryBroker

CAPTURE_TYPE = "@capture"  # not a valid type name in a scenario, so it never clashes with one
INJECT_TYPE = "@inject"
INJECTOR = "@input"
DEFAULT_TIMEOUT = 30.0
EXCERPT_CHARS = 200
SHOWN_MESSAGES = 3


@dataclass
class TestResult:
    """The verdict of one test: failures are self-contained lines (what, where, expected, got)."""

    __test__: ClassVar[bool] = False  # not a pytest class, despite the name

    name: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # gear failures seen on the way, for context
    error: str | None = None  # the test could not run at all (a gear refused to build or start)
    seconds: float = 0.0
    outputs: dict[str, list[Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- the two gears a test adds


class _Capture(Gear):
    """Records every message it receives under `as` (default: its own name.port)."""

    type = CAPTURE_TYPE
    records: ClassVar[dict[str, list[Message]]] = {}

    async def handle(self, port: str, message: Message) -> None:
        self.records.setdefault(self.config.get("as") or f"{self.name}.{port}", []).append(message)


class _Inject(Gear):
    """Emits the test's inputs, one output port per input entry, in document order; then ends."""

    type = INJECT_TYPE

    async def run(self) -> None:
        for index, (port, bodies) in enumerate(self.config["inputs"]):
            for position, body in enumerate(bodies):
                await self.ctx.emit(port, body, position=f"{index}.{position}")



# ---------------------------------------------------------------- building and running


def derive(scenario: Scenario, test: ScenarioTest, ports: Mapping[str, GearPorts | None]) -> Scenario:
    """The scenario a test runs: no sources, sinks as captures, every output captured, one injector."""
    kept: set[str] = set()
    gears: list[GearSpec] = []
    wires: list[WireSpec] = []
    for gear in scenario.gears:
        info = ports.get(gear.name)
        if info is None or info.source:
            continue
        kept.add(gear.name)
        if info.sink:
            gears.append(GearSpec(gear.name, CAPTURE_TYPE, {}))
            continue
        gears.append(gear)
        for port in info.outputs:
            capture = f"@capture:{gear.name}.{port}"
            gears.append(GearSpec(capture, CAPTURE_TYPE, {"as": f"{gear.name}.{port}"}))
            wires.append(WireSpec(Endpoint(gear.name, port), Endpoint(capture, "in"), "memory"))
    for wire in scenario.wires:
        if wire.source.gear in kept and wire.target.gear in kept:
            options = {k: v for k, v in wire.options.items() if k == "max_deliver"}
            wires.append(dataclasses.replace(wire, transport="memory", options={**options, "retry_delay": 0}))
    inputs = []
    for index, item in enumerate(test.inputs):
        port = f"i{index}"
        inputs.append((port, [dict(b) for b in item.bodies]))
        wires.append(WireSpec(Endpoint(INJECTOR, port), item.at, "memory"))
    gears.append(GearSpec(INJECTOR, INJECT_TYPE, {"inputs": inputs}))
    return dataclasses.replace(scenario, gears=tuple(gears), wires=tuple(wires), tests=(), expect=())


def _test_catalog(catalog: Catalog, records: dict[str, list[Message]]) -> Catalog:
    capture = type("Capture", (_Capture,), {"records": records})
    types = {name: cls for name, cls in catalog}
    types[CAPTURE_TYPE] = capture
    types[INJECT_TYPE] = _Inject
    return Catalog(types)


async def run_test(
    scenario: Scenario,
    test: ScenarioTest,
    *,
    catalog: Catalog,
    ports: Mapping[str, GearPorts | None] | None = None,
    scenario_hash: str = "0" * 64,
    timeout: float = DEFAULT_TIMEOUT,
) -> TestResult:
    """Run one test and judge what came out."""
    ports = ports if ports is not None else scenario_ports(scenario, catalog)
    records: dict[str, list[Message]] = {}
    derived = derive(scenario, test, ports)
    runtime = Runtime(
        derived, scenario_hash, catalog=_test_catalog(catalog, records),
        brokers={"memory": MemoryBroker(queue_size=64)}, checkpoints=MemoryCheckpoints(),
    )
    t0 = time.monotonic()
    result = TestResult(test.name, passed=False)
    try:
        await runtime.build()
        await runtime.start()
    except FluxmixError as exc:
        result.error = str(exc)
    except Exception as exc:  # a plugin gear's bug: the test errs, the suite goes on
        result.error = f"{type(exc).__name__}: {exc}"
    report = await runtime.stop(timeout=timeout)
    result.seconds = round(time.monotonic() - t0, 6)
    if report.timed_out and result.error is None:
        result.error = f"the gears did not finish within {timeout:g}s"
    for name, gear in runtime.status().gears.items():
        if gear.errors and not name.startswith("@"):
            result.notes.append(f"gear {name}: {gear.errors} failed attempt(s), last: {gear.last_error}")
    result.outputs = {key: [m.body for m in msgs] for key, msgs in sorted(records.items())}
    if result.error is None:
        result.failures = judge(test, result.outputs)
        result.passed = not result.failures
    return result


def judge(test: ScenarioTest, outputs: Mapping[str, Sequence[Any]]) -> list[str]:
    """What differs between a test's expectations and what its gears emitted (empty: it passed)."""
    failures: list[str] = []
    for output in test.outputs:
        failures.extend(_judge_output(output, list(outputs.get(str(output.at), []))))
    for endpoint in test.no_output_from:
        got = list(outputs.get(str(endpoint), []))
        if got:
            failures.append(f"{endpoint}: expected no output, got {_count(len(got))}{_shown(got)}")
    return failures


def _judge_output(output: TestOutput, got: list[Any]) -> list[str]:
    at = str(output.at)
    failures: list[str] = []
    if output.count is not None and len(got) != output.count:
        failures.append(f"{at}: expected {_count(output.count)}, got {len(got)}{_shown(got)}")
    if output.conditions:
        if not got and output.count is None:
            failures.append(f"{at}: expected messages satisfying {_quoted(output.conditions)}, got none")
        compiled = [(text, compile_expression(text)) for text in output.conditions]
        for index, body in enumerate(got):
            for text, expression in compiled:
                where = f"{at}: message {index + 1} of {len(got)}"
                try:
                    ok = expression.evaluate(body)
                except ExpressionEvalError as exc:
                    failures.append(f"{where}: condition `{text}` could not be evaluated: {exc}; body {_excerpt(body)}")
                    continue
                if not ok:
                    failures.append(f"{where}: condition `{text}` is false; body {_excerpt(body)}")
    if output.bodies is not None:
        expected = [_canonical(b) for b in output.bodies]
        actual = [_canonical(b) for b in got]
        if expected != actual:
            diff = difflib.unified_diff(expected, actual, "expected", "actual", lineterm="", n=2)
            lines = [f"    {line[:EXCERPT_CHARS]}" for line in diff]
            failures.append(
                f"{at}: bodies differ (expected {_count(len(expected))}, got {len(actual)}):\n" + "\n".join(lines)
            )
    return failures


def _canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, default=str, ensure_ascii=False)


def _excerpt(body: Any) -> str:
    text = _canonical(body)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def _shown(got: list[Any]) -> str:
    if not got:
        return ""
    shown = ", ".join(_excerpt(b) for b in got[:SHOWN_MESSAGES])
    more = f" and {len(got) - SHOWN_MESSAGES} more" if len(got) > SHOWN_MESSAGES else ""
    return f": {shown}{more}"


def _count(n: int) -> str:
    return f"{n} message" if n == 1 else f"{n} messages"


def _quoted(conditions: Sequence[str]) -> str:
    return " and ".join(f"`{c}`" for c in conditions)


async def run_tests(
    scenario: Scenario,
    tests: Sequence[ScenarioTest],
    *,
    catalog: Catalog,
    scenario_hash: str = "0" * 64,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[TestResult]:
    """Every test, one after the other (each on a fresh runtime, so none sees another's messages)."""
    ports = scenario_ports(scenario, catalog)
    return [
        await run_test(scenario, test, catalog=catalog, ports=ports, scenario_hash=scenario_hash, timeout=timeout)
        for test in tests
    ]


def run_tests_sync(scenario: Scenario, tests: Sequence[ScenarioTest], **kwargs: Any) -> list[TestResult]:
    return asyncio.run(run_tests(scenario, tests, **kwargs))


__all__ = ["TestResult", "derive", "judge", "run_test", "run_tests", "run_tests_sync"]
