"""Pre-flight validation of scenario documents: every problem at once, each with a location.

Validation works on the raw parsed YAML (dicts and lists), not on the `Scenario` model, because
the operator's mistakes live there: a wrong type, a misspelt key, a list where a mapping belongs.
It never stops at the first problem, and it avoids cascades (a gear whose type is unknown does
not also produce "unknown port" problems on its wires). Once a document validates,
`fluxmix.scenario.build_scenario` turns it into the immutable `Scenario` the rest of fluxmix uses.
This module checks the document's structure and wiring; it hands each gear's config to
`fluxmix.gear_config`, cycle search to `fluxmix.cycles`, and `tests:`, `expect:` and `globals:`
to `fluxmix.checks`. Spec documents are validated by `fluxmix.spec_validation`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fluxmix.checks.globals_section import check_globals_section
from fluxmix.checks.sections import GearPorts, check_sections
from fluxmix.cycles import Graph, cycle_through, strongly_connected
from fluxmix.document_checks import check_header, check_unknown_keys
from fluxmix.errors import Problem, UserError
from fluxmix.gear_config import config_problems
from fluxmix.gears.base import Gear, Port
from fluxmix.gears.catalog import Catalog
from fluxmix.problem_text import describe, name_list
from fluxmix.refs import GEAR_NAME_PATTERN, check_spec_reference
from fluxmix.scenario import DEFAULT_TRANSPORT, TRANSPORTS, Endpoint, Scenario, parse_endpoint, scenario_to_raw
from fluxmix.suggest import Suggester, did_you_mean

SCENARIO_KEYS = ("name", "version", "spec", "description", "gears", "wires", "tests", "expect", "globals")
GEAR_KEYS = ("name", "type", "config")
WIRE_KEYS = ("from", "to", "transport", "queue_size", "max_deliver", "retry_delay", "backlog", "chain")

QUEUE_SIZE_RANGE = (1, 1_000_000)
BACKLOG_RANGE = (1, 100_000_000)  # messages of a standard wire in its stream (issue 17)

SpecResolver = Callable[[str], "str | None"]


@dataclass
class _GearInfo:
    """What validation learnt about one gear; ports are None when they cannot be known."""

    index: int
    name: str
    cls: type[Gear] | None
    inputs: tuple[Port, ...] | None = None
    outputs: tuple[Port, ...] | None = None
    # Built on first use: a gear may have thousands of ports (route) and as many wires.
    _port_names: dict[str, frozenset[str]] = field(default_factory=dict)
    _suggesters: dict[str, Suggester] = field(default_factory=dict)

    def port_names(self, direction: str) -> frozenset[str]:
        """Names of the `input` or `output` ports (empty when unknown)."""
        if direction not in self._port_names:
            ports = self.inputs if direction == "input" else self.outputs
            self._port_names[direction] = frozenset(p.name for p in ports or ())
        return self._port_names[direction]

    def suggest_port(self, direction: str, port: str) -> str:
        if direction not in self._suggesters:
            ports = self.inputs if direction == "input" else self.outputs
            self._suggesters[direction] = Suggester(p.name for p in ports or ())
        return self._suggesters[direction].hint(port)


@dataclass
class _WireInfo:
    index: int
    source: Endpoint
    target: Endpoint


@dataclass
class _State:
    problems: list[Problem] = field(default_factory=list)
    # A gear whose type is unknown, or whose config is bad and decides its ports, has ports None:
    # wires to it get no port checks (they would only echo the gear's own problem).
    gears: dict[str, _GearInfo] = field(default_factory=dict)
    gears_known: bool = True  # False when `gears` itself is missing or not a list
    # Required-input checks would only echo another problem when a wire's target is unclear:
    wires_unclear: bool = False  # some wire's `to` could not be read at all
    targets_unclear: set[str] = field(default_factory=set)  # gears with a wire whose `to` port is wrong
    _gear_names: Suggester | None = None

    def closest_gear(self, name: str) -> str | None:
        """The defined gear closest to an undefined one (every gear is known once wires are checked)."""
        if self._gear_names is None:
            self._gear_names = Suggester(self.gears)
        return self._gear_names.closest(name)

    def add(self, location: str, reason: str) -> None:
        self.problems.append(Problem(location, reason))


def validate_scenario(
    raw: object,
    *,
    catalog: Catalog,
    spec_resolves: SpecResolver | None = None,
) -> list[Problem]:
    """Every problem in a scenario document (raw YAML data or a `Scenario`), in document order.

    `spec_resolves(ref)` returns the spec's hash, or None when the store does not hold it; pass
    None to skip that check (no store at hand). An empty list means the scenario is valid.
    """
    if isinstance(raw, Scenario):
        raw = scenario_to_raw(raw)
    state = _State()
    if not isinstance(raw, Mapping):
        state.add("", f"a scenario must be a YAML mapping with name, gears and wires; found {describe(raw)}")
        return state.problems

    check_header(raw, SCENARIO_KEYS, "scenario", state.problems)
    if "spec" in raw:
        _check_spec(raw["spec"], spec_resolves, state)

    _check_gears(raw, catalog, state)
    wires = _check_wires(raw, state)
    _check_cycles(wires, state)
    _check_required_inputs(wires, state)
    _check_check_sections(raw, wires, state)
    _check_globals_section(raw, state)
    return state.problems


def spec_problem(value: object, spec_resolves: SpecResolver | None) -> Problem | None:
    """The problem with a scenario's `spec:` value (malformed, or not in the store), if any."""
    reason = check_spec_reference(value)
    if reason:
        return Problem("spec", reason)
    if spec_resolves is None:
        return None
    assert isinstance(value, str)
    try:
        found = spec_resolves(value)
    except UserError as exc:  # e.g. an ambiguous hash prefix
        return Problem("spec", f"spec {value!r} cannot be resolved: {exc}")
    if found is None:
        return Problem("spec", f"spec {value!r} is not in the store; import it first with `fluxmix spec import`")
    return None


def _check_spec(value: object, spec_resolves: SpecResolver | None, state: _State) -> None:
    problem = spec_problem(value, spec_resolves)
    if problem is not None:
        state.problems.append(problem)


def _check_gears(raw: Mapping[str, Any], catalog: Catalog, state: _State) -> None:
    if "gears" not in raw:
        state.add("gears", "required: a list of gears (name, type, config)")
        state.gears_known = False
        return
    gears = raw["gears"]
    if not isinstance(gears, list):
        state.add("gears", f"must be a list of gears; found {describe(gears)}")
        state.gears_known = False
        return
    if not gears:
        state.add("gears", "a scenario needs at least one gear")
        return
    for index, gear in enumerate(gears):
        _check_gear(index, gear, catalog, state)


def _check_gear(index: int, gear: object, catalog: Catalog, state: _State) -> None:
    base = f"gears[{index}]"
    if not isinstance(gear, Mapping):
        state.add(base, f"must be a mapping with name, type and config; found {describe(gear)}")
        return
    check_unknown_keys(gear, GEAR_KEYS, base, "gear", state.problems)

    name = gear.get("name")
    name_ok = False
    if "name" not in gear:
        state.add(f"{base}.name", "required: a unique name for this gear, used in wires as name.port")
    elif not isinstance(name, str):
        state.add(f"{base}.name", f"must be a string; found {describe(name)}")
    elif not GEAR_NAME_PATTERN.fullmatch(name):
        state.add(
            f"{base}.name",
            f"{name!r} is not a valid gear name: 1-64 characters of a-z 0-9 _ -, starting with a letter or digit"
            + (" (no dots: wires use gear.port)" if "." in name else ""),
        )
    elif name in state.gears:
        state.add(f"{base}.name", f"duplicate gear name {name!r} (also gears[{state.gears[name].index}])")
    else:
        name_ok = True
    info = _GearInfo(index, name, None) if name_ok else None
    if info is not None:
        assert isinstance(name, str)
        state.gears[name] = info

    type_name = gear.get("type")
    cls: type[Gear] | None = None
    if "type" not in gear:
        state.add(f"{base}.type", f"required: a gear type (known: {name_list(catalog.names())})")
    elif not isinstance(type_name, str):
        state.add(f"{base}.type", f"must be a string; found {describe(type_name)}")
    else:
        cls = catalog.get(type_name)
        if cls is None:
            state.add(
                f"{base}.type",
                f"unknown gear type {type_name!r}{did_you_mean(type_name, catalog.names())} "
                f"(known: {name_list(catalog.names())})",
            )

    config = gear.get("config", {})
    if config is None:
        config = {}  # `config:` with nothing after it
    config_ok = False
    if not isinstance(config, Mapping):
        state.add(f"{base}.config", f"must be a mapping; found {describe(config)}")
    elif cls is not None:
        problems = config_problems(cls, type_name, config, f"{base}.config")  # type: ignore[arg-type]
        state.problems.extend(problems)
        config_ok = not problems
    if cls is not None and info is not None:
        _learn_ports(info, cls, type_name, config if config_ok else None, f"{base}.config", state)  # type: ignore[arg-type]


def _learn_ports(
    info: _GearInfo, cls: type[Gear], type_name: str, config: Mapping[str, Any] | None, base: str, state: _State
) -> None:
    """Record the gear's ports so its wires are checked; `config` None means the config has problems.

    A bad config must not hide the gear's wire problems (every problem at once): ports that do not
    depend on config (the class keeps Gear's input_ports/output_ports) are known whatever the
    config; ports a bad config decides (route's routes, a python gear's class) stay unknown.
    """
    try:
        if config is not None:
            inputs: tuple[Port, ...] | None = tuple(cls.input_ports(config))
            outputs: tuple[Port, ...] | None = tuple(cls.output_ports(config))
        else:
            static_inputs = _inherits(cls, "input_ports")
            inputs = tuple(cls.input_ports({})) if static_inputs else None
            outputs = tuple(cls.output_ports({})) if static_inputs and _inherits(cls, "output_ports") else None
    except (Exception, SystemExit) as exc:  # a plugin's bug (even sys.exit) is reported, not the end of validation
        state.add(base, f"gear type {type_name!r} cannot compute its ports from this config: {exc}")
        return
    info.cls, info.inputs, info.outputs = cls, inputs, outputs


def _inherits(cls: type[Gear], method: str) -> bool:
    """True when `cls` keeps Gear's own `method`, so its ports come from class attributes, not config."""
    return getattr(cls, method).__func__ is getattr(Gear, method).__func__


# ---------------------------------------------------------------- wires


def _check_wires(raw: Mapping[str, Any], state: _State) -> list[_WireInfo]:
    wires = raw.get("wires", [])
    if wires is None:
        return []
    if not isinstance(wires, list):
        state.add("wires", f"must be a list of wires (from, to, transport); found {describe(wires)}")
        state.wires_unclear = True
        return []
    good: list[_WireInfo] = []
    seen: dict[tuple[Endpoint, Endpoint], int] = {}
    for index, wire in enumerate(wires):
        base = f"wires[{index}]"
        if not isinstance(wire, Mapping):
            state.add(base, f"must be a mapping with from and to; found {describe(wire)}")
            state.wires_unclear = True
            continue
        check_unknown_keys(wire, WIRE_KEYS, base, "wire", state.problems)
        source = _check_endpoint(wire, "from", base, state)
        target = _check_endpoint(wire, "to", base, state)
        transport = _check_transport(wire, base, state)
        _check_wire_options(wire, transport, base, state)
        if source is None or target is None:
            continue
        pair = (source, target)
        if pair in seen:
            state.add(base, f"duplicate wire {source} -> {target} (also wires[{seen[pair]}])")
            continue
        seen[pair] = index
        good.append(_WireInfo(index, source, target))
    return good


def _check_endpoint(wire: Mapping[str, Any], key: str, base: str, state: _State) -> Endpoint | None:
    """The endpoint under `from`/`to` when it names an existing gear and a port of the right direction."""
    location = f"{base}.{key}"
    direction = "output" if key == "from" else "input"
    if key not in wire:
        state.add(location, f"required: the {direction} this wire {'reads from' if key == 'from' else 'delivers to'}, as gear.port")
        state.wires_unclear |= key == "to"
        return None
    value = wire[key]
    endpoint = parse_endpoint(value)
    if endpoint is None:
        hint = ""
        if isinstance(value, str) and value in state.gears:
            info = state.gears[value]
            ports = info.outputs if key == "from" else info.inputs
            if ports:
                hint = f"; did you mean {f'{value}.{ports[0].name}'!r}?"
        shown = repr(value) if isinstance(value, str) else describe(value)
        state.add(location, f"{shown} is not gear.port (e.g. 'source.out'){hint}")
        state.wires_unclear |= key == "to"
        return None
    if not state.gears_known:
        return None  # `gears` itself is reported; every wire would repeat it
    if endpoint.gear not in state.gears:
        meant = state.closest_gear(endpoint.gear)
        state.add(location, f"gear {endpoint.gear!r} is not defined" + (f"; did you mean {meant!r}?" if meant else ""))
        if key == "to" and meant is not None:  # the gear it was meant for would also get a "required input" echo
            state.targets_unclear.add(meant)
        return None
    info = state.gears[endpoint.gear]
    wanted = info.outputs if key == "from" else info.inputs
    if wanted is None or info.cls is None:
        return endpoint  # its type or config is already reported; port checks would only add noise
    if endpoint.port in info.port_names(direction):
        return endpoint
    wanted_names = [p.name for p in wanted]
    if key == "to":
        state.targets_unclear.add(endpoint.gear)
    type_name = info.cls.type if hasattr(info.cls, "type") else "?"
    if endpoint.port in info.port_names("input" if key == "from" else "output"):
        other_direction = "input" if key == "from" else "output"
        state.add(
            location,
            f"{endpoint} is an {other_direction} port; '{key}' must name an {direction} "
            f"({direction}s of {endpoint.gear!r}: {name_list(wanted_names)})",
        )
        return None
    state.add(
        location,
        f"gear {endpoint.gear!r} ({type_name}) has no {direction} port {endpoint.port!r}"
        f"{info.suggest_port(direction, endpoint.port)} ({direction}s: {name_list(wanted_names)})",
    )
    return None


def _check_transport(wire: Mapping[str, Any], base: str, state: _State) -> str | None:
    transport = wire.get("transport", DEFAULT_TRANSPORT)
    if isinstance(transport, str) and transport in TRANSPORTS:
        return transport
    shown = repr(transport) if isinstance(transport, str) else describe(transport)
    state.add(
        f"{base}.transport",
        f"unknown transport {shown}{did_you_mean(transport, TRANSPORTS)} (known: {' | '.join(TRANSPORTS)})",
    )
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_wire_options(wire: Mapping[str, Any], transport: str | None, base: str, state: _State) -> None:
    if "queue_size" in wire:
        value = wire["queue_size"]
        low, high = QUEUE_SIZE_RANGE
        if transport is not None and transport != "memory":
            state.add(f"{base}.queue_size", f"applies only to memory wires; this wire's transport is {transport}")
        elif not _is_int(value) or not low <= value <= high:
            state.add(f"{base}.queue_size", f"must be a whole number from {low} to {high:_}; found {describe(value)}")
    if "backlog" in wire:
        value = wire["backlog"]
        low, high = BACKLOG_RANGE
        if transport is not None and transport != "standard":
            state.add(f"{base}.backlog", f"applies only to standard wires (a memory wire has queue_size); this wire's transport is {transport}")
        elif not _is_int(value) or not low <= value <= high:
            state.add(f"{base}.backlog", f"must be a whole number of messages from {low} to {high:_}; found {describe(value)}")
    if "chain" in wire:  # operator chaining (fluxmix.runtime.chaining): memory wires only
        value = wire["chain"]
        if transport is not None and transport != "memory":
            state.add(f"{base}.chain", f"applies only to memory wires; this wire's transport is {transport}")
        elif not isinstance(value, bool):
            state.add(f"{base}.chain", f"must be true or false; found {describe(value)}")
    if "max_deliver" in wire:
        value = wire["max_deliver"]
        if not _is_int(value) or value < 1:
            state.add(
                f"{base}.max_deliver",
                f"must be a whole number >= 1 (delivery attempts before dead-letter); found {describe(value)}",
            )
    if "retry_delay" in wire:
        value = wire["retry_delay"]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        if not ok:
            state.add(f"{base}.retry_delay", f"must be a number of seconds >= 0; found {describe(value)}")


def _check_cycles(wires: list[_WireInfo], state: _State) -> None:
    """Refuse directed cycles between gears: a ring of bounded queues can fill and deadlock."""
    graph: Graph = {}
    for wire in wires:
        graph.setdefault(wire.source.gear, []).append((wire.target.gear, wire.index))
    components = strongly_connected(graph)
    component_of = {gear: number for number, component in enumerate(components) for gear in component}
    # Each cycle is reported at its first wire; one pass over the wires, however many cycles there are.
    first: dict[int, _WireInfo] = {}
    for wire in wires:
        number = component_of.get(wire.source.gear)
        if number is not None and component_of.get(wire.target.gear) == number:
            if number not in first or wire.index < first[number].index:
                first[number] = wire
    for number, component in enumerate(components):
        members = set(component)
        start = first[number]
        path, indexes = cycle_through(graph, members, start.source.gear, start.target.gear, start.index)
        state.add(
            f"wires[{start.index}]",
            f"wires form a cycle: {' -> '.join(path)} (wires {', '.join(f'[{i}]' for i in indexes)}); "
            "a cycle of bounded queues can deadlock",
        )


def _check_required_inputs(wires: list[_WireInfo], state: _State) -> None:
    if state.wires_unclear:
        return
    wired = {(w.target.gear, w.target.port) for w in wires}
    for name, info in state.gears.items():
        if info.inputs is None or name in state.targets_unclear:
            continue
        for port in info.inputs:
            if port.required and (name, port.name) not in wired:
                state.add(
                    f"gears[{info.index}]",
                    f"input {name}.{port.name} is required but no wire delivers to it",
                )


def _check_check_sections(raw: Mapping[str, Any], wires: list[_WireInfo], state: _State) -> None:
    """`tests:` and `expect:`: their own module checks them against what validation learnt."""
    if raw.get("tests") is None and raw.get("expect") is None:
        return  # the common case costs nothing (validation of large scenarios is benchmarked)
    gears: dict[str, GearPorts | None] | None = None
    if state.gears_known:
        gears = {}
        for name, info in state.gears.items():
            known = info.cls is not None and info.inputs is not None and info.outputs is not None
            gears[name] = GearPorts.of(info.cls, info.inputs, info.outputs) if known else None  # type: ignore[arg-type]
    state.problems.extend(check_sections(raw, gears, [(w.source, w.target) for w in wires]))


def _check_globals_section(raw: Mapping[str, Any], state: _State) -> None:
    """`globals:` (initial values, JSON Schema per key): checked in its own module."""
    if raw.get("globals") is None:
        return
    state.problems.extend(check_globals_section(raw))


__all__ = [
    "SpecResolver",
    "spec_problem",
    "validate_scenario",
]
