"""Pre-flight validation of scenario and spec documents: every problem at once, each with a location.

Validation works on the raw parsed YAML (dicts and lists), not on the `Scenario` model, because
the operator's mistakes live there: a wrong type, a misspelt key, a list where a mapping belongs.
It never stops at the first problem, and it avoids cascades (a gear whose type is unknown does
not also produce "unknown port" problems on its wires). Once a document validates,
`build_scenario` turns it into the immutable `Scenario` the rest of fluxmix uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from fluxmix.errors import Problem, UserError
from fluxmix.refs import NAME_RE, store_ref_problem, tag_problem
from fluxmix.gears.base import Gear, Port
from fluxmix.gears.catalog import Catalog
from fluxmix.schema_errors import describe as describe_schema_error
from fluxmix.scenario import DEFAULT_TRANSPORT, TRANSPORTS, Endpoint, GearSpec, Scenario, WireSpec
from fluxmix.suggest import Suggester, did_you_mean

GEAR_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
PORT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

SCENARIO_KEYS = ("name", "version", "spec", "description", "gears", "wires", "tests", "expect", "globals")
GEAR_KEYS = ("name", "type", "config")
WIRE_KEYS = ("from", "to", "transport", "queue_size", "max_deliver", "retry_delay")
WIRE_OPTION_KEYS = ("queue_size", "max_deliver", "retry_delay")
SPEC_KEYS = ("name", "version", "description", "schema")

QUEUE_SIZE_RANGE = (1, 1_000_000)

# Tags in the store refuse build metadata: SemVer ignores it when ordering, so two tags would tie.
_BUILD_METADATA = (
    "{value!r} has build metadata (+...), which SemVer ignores when ordering versions; "
    "use a pre-release (1.2.0-rc.1) or a new version"
)

SpecResolver = Callable[[str], "str | None"]


# ---------------------------------------------------------------- small helpers


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
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{str(part)!r}]"
    return out


_NAMES_SHOWN = 20


def _names(items: Iterable[str]) -> str:
    """A readable list for a message; a long one (a route's thousand ports) is cut short."""
    items = list(items)
    if len(items) > _NAMES_SHOWN:
        return ", ".join(items[:_NAMES_SHOWN]) + f", … ({len(items)} in all)"
    return ", ".join(items) if items else "none"


def _check_version(value: object, location: str, problems: list[Problem]) -> None:
    """A `version:` must be what the store accepts as a tag (fluxmix.refs.canonical_tag)."""
    if isinstance(value, str):
        if tag_problem(value) is None:
            return
        if "+" in value and tag_problem(value.split("+", 1)[0]) is None:
            problems.append(Problem(location, _BUILD_METADATA.format(value=value)))
            return
    hint = " (quote it, or YAML reads it as a number)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    problems.append(Problem(location, f"must be a SemVer version like 1.2.0 or v1.2.0; found {describe(value)}{hint}"))


def _check_name(raw: Mapping[str, Any], problems: list[Problem], what: str) -> None:
    if "name" not in raw:
        problems.append(Problem("name", f"required: the {what}'s name, e.g. payment-flow"))
        return
    name = raw["name"]
    if not isinstance(name, str):
        problems.append(Problem("name", f"must be a string; found {describe(name)}"))
    elif not NAME_RE.fullmatch(name):
        problems.append(
            Problem(
                "name",
                f"{name!r} is not a valid name: 1-64 characters of a-z 0-9 . _ -, starting with a letter or digit",
            )
        )


def _check_unknown_keys(raw: Mapping[Any, Any], allowed: Sequence[str], base: str, what: str, problems: list[Problem]) -> None:
    for key in raw:
        if key not in allowed:
            location = json_path(base, [key])
            problems.append(
                Problem(location, f"unknown {what} key {key!r}{did_you_mean(key, allowed)} (allowed: {_names(allowed)})")
            )


def _check_header(raw: Mapping[Any, Any], allowed: Sequence[str], what: str, problems: list[Problem]) -> None:
    """The top-level keys scenarios and specs share: unknown keys, name, version, description."""
    _check_unknown_keys(raw, allowed, "", "top-level", problems)
    _check_name(raw, problems, what)
    if "version" in raw:
        _check_version(raw["version"], "version", problems)
    if "description" in raw and not isinstance(raw["description"], str):
        problems.append(Problem("description", f"must be a string; found {describe(raw['description'])}"))


def check_spec_reference(value: object) -> str | None:
    """Why `value` is not a spec reference (`name`, `name:tag`, `name:latest`, `sha256:<hex>`), or None.

    The store's own grammar (fluxmix.refs), so what validates is what the store resolves.
    """
    if not isinstance(value, str):
        return f"must be a spec reference like visa:v1.0.0; found {describe(value)}"
    return store_ref_problem(value)


# ---------------------------------------------------------------- scenario validation


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


def gear_to_raw(gear: GearSpec) -> dict[str, Any]:
    """A gear as the scenario file writes it."""
    return {"name": gear.name, "type": gear.type, "config": dict(gear.config)}


def wire_to_raw(wire: WireSpec) -> dict[str, Any]:
    """A wire as the scenario file writes it: from, to, transport and its options."""
    return {"from": str(wire.source), "to": str(wire.target), "transport": wire.transport, **dict(wire.options)}


def scenario_to_raw(scenario: Scenario) -> dict[str, Any]:
    """The YAML-shaped mapping of a `Scenario` (the inverse of `build_scenario`)."""
    raw: dict[str, Any] = {"name": scenario.name}
    if scenario.version is not None:
        raw["version"] = scenario.version
    if scenario.spec is not None:
        raw["spec"] = scenario.spec
    if scenario.description is not None:
        raw["description"] = scenario.description
    raw["gears"] = [gear_to_raw(g) for g in scenario.gears]
    raw["wires"] = [wire_to_raw(w) for w in scenario.wires]
    if scenario.tests:
        raw["tests"] = list(scenario.tests)
    if scenario.expect:
        raw["expect"] = list(scenario.expect)
    if scenario.globals:
        raw["globals"] = dict(scenario.globals)
    return raw


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

    _check_header(raw, SCENARIO_KEYS, "scenario", state.problems)
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
    _check_unknown_keys(gear, GEAR_KEYS, base, "gear", state.problems)

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
        state.add(f"{base}.type", f"required: a gear type (known: {_names(catalog.names())})")
    elif not isinstance(type_name, str):
        state.add(f"{base}.type", f"must be a string; found {describe(type_name)}")
    else:
        cls = catalog.get(type_name)
        if cls is None:
            state.add(
                f"{base}.type",
                f"unknown gear type {type_name!r}{did_you_mean(type_name, catalog.names())} "
                f"(known: {_names(catalog.names())})",
            )

    config = gear.get("config", {})
    if config is None:
        config = {}  # `config:` with nothing after it
    config_ok = False
    if not isinstance(config, Mapping):
        state.add(f"{base}.config", f"must be a mapping; found {describe(config)}")
    elif cls is not None:
        config_ok = _check_config(cls, type_name, config, f"{base}.config", state)  # type: ignore[arg-type]
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


_VALIDATORS: dict[type, tuple[int, Any]] = {}  # gear class -> (id of its schema, validator)


def _config_validator(cls: type[Gear]) -> Any:
    """One checked validator per gear type: checking the schema and building the validator per
    gear was 5 of 6 seconds when validating a 1,000-gear scenario (bench/RESULTS.md)."""
    schema = cls.config_schema
    cached = _VALIDATORS.get(cls)
    if cached is not None and cached[0] == id(schema):
        return cached[1]
    validator_cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    _VALIDATORS[cls] = (id(schema), validator)
    return validator


def _check_config(cls: type[Gear], type_name: str, config: Mapping[str, Any], base: str, state: _State) -> bool:
    """JSON Schema first (every error), then the type's semantic checks. True when both pass."""
    try:
        validator = _config_validator(cls)
        errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    except SchemaError as exc:
        state.add(base, f"gear type {type_name!r} declares an invalid config schema: {exc.message}")
        return False
    for error in errors:
        for location, reason in _schema_error_problems(error, base, type_name):
            state.add(location, reason)
    if errors:
        return False
    try:
        semantic = list(cls.check_config(config))
    except (Exception, SystemExit) as exc:  # a plugin's bug (even sys.exit) is reported, not the end of validation
        state.add(base, f"gear type {type_name!r} failed to check this config: {exc}")
        return False
    for path, reason in semantic:
        parts = [p for p in re.split(r"\.", path) if p] if isinstance(path, str) else list(path)
        state.add(json_path(base, parts), reason)
    return not semantic


def _schema_error_problems(error: jsonschema.ValidationError, base: str, type_name: str) -> list[tuple[str, str]]:
    location = json_path(base, error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = list((error.schema.get("properties") or {}).keys()) if isinstance(error.schema, Mapping) else []
        patterns = list((error.schema.get("patternProperties") or {}).keys()) if isinstance(error.schema, Mapping) else []
        extras = [k for k in error.instance if k not in known and not any(re.search(p, str(k)) for p in patterns)]
        if extras:
            where = f"for gear type {type_name!r}" if location == base else "here"
            return [
                (
                    json_path(location, [extra]),
                    f"unknown config key {extra!r} {where}{did_you_mean(extra, known)} (known: {_names(known)})",
                )
                for extra in extras
            ]
    return [(location, describe_schema_error(error))]


# ---------------------------------------------------------------- wires


def parse_endpoint(value: object) -> Endpoint | None:
    """`gear.port` -> Endpoint, or None when malformed. Gear names hold no dots; ports may not either."""
    if not isinstance(value, str):
        return None
    gear, sep, port = value.partition(".")
    if not sep or not GEAR_NAME_PATTERN.fullmatch(gear) or not PORT_PATTERN.fullmatch(port):
        return None
    return Endpoint(gear, port)


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
        _check_unknown_keys(wire, WIRE_KEYS, base, "wire", state.problems)
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
            f"({direction}s of {endpoint.gear!r}: {_names(wanted_names)})",
        )
        return None
    state.add(
        location,
        f"gear {endpoint.gear!r} ({type_name}) has no {direction} port {endpoint.port!r}"
        f"{info.suggest_port(direction, endpoint.port)} ({direction}s: {_names(wanted_names)})",
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
    graph: dict[str, list[tuple[str, int]]] = {}
    for wire in wires:
        graph.setdefault(wire.source.gear, []).append((wire.target.gear, wire.index))
    components = _strongly_connected(graph)
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
        path, indexes = _cycle_through(graph, members, start)
        state.add(
            f"wires[{start.index}]",
            f"wires form a cycle: {' -> '.join(path)} (wires {', '.join(f'[{i}]' for i in indexes)}); "
            "a cycle of bounded queues can deadlock",
        )


def _strongly_connected(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; returns components that contain a cycle (size > 1 or a self-loop)."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {t for edges in graph.values() for t, _ in edges})
    for root in nodes:
        if root in index_of:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, edge_i = work.pop()
            if edge_i == 0:
                index_of[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = graph.get(node, [])
            if edge_i < len(edges):
                work.append((node, edge_i + 1))
                succ = edges[edge_i][0]
                if succ not in index_of:
                    work.append((succ, 0))
                elif succ in on_stack:
                    low[node] = min(low[node], index_of[succ])
                continue
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or any(t == node for t, _ in graph.get(node, [])):
                    result.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def _cycle_through(graph: dict[str, list[tuple[str, int]]], members: set[str], start: _WireInfo) -> tuple[list[str], list[int]]:
    """A concrete cycle that uses wire `start`: BFS from its target back to its source inside the component."""
    origin, first = start.source.gear, start.target.gear
    previous: dict[str, tuple[str, int] | None] = {first: None}
    queue = [first]
    while queue and origin not in previous:
        node = queue.pop(0)
        for succ, idx in graph.get(node, []):
            if succ in members and succ not in previous:
                previous[succ] = (node, idx)
                queue.append(succ)
    path, indexes = [origin], []
    node = origin
    while node != first:
        step = previous[node]
        assert step is not None
        node, idx = step
        path.append(node)
        indexes.append(idx)
    if origin == first:
        return [origin, origin], [start.index]
    path.append(origin)
    path.reverse()
    indexes.reverse()
    return path, [start.index, *indexes]


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
    from fluxmix.checks.sections import GearPorts, check_sections  # it imports this module's helpers

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
    from fluxmix.checks.globals_section import check_globals_section  # it imports this module's helpers

    state.problems.extend(check_globals_section(raw))


# ---------------------------------------------------------------- building the model


def build_scenario(raw: Mapping[str, Any]) -> Scenario:
    """The immutable `Scenario` of a document that `validate_scenario` accepted."""
    gears = tuple(
        GearSpec(name=g["name"], type=g["type"], config=dict(g.get("config") or {})) for g in raw["gears"]
    )
    wires = []
    for w in raw.get("wires") or []:
        source, target = parse_endpoint(w["from"]), parse_endpoint(w["to"])
        assert source is not None and target is not None, "build_scenario needs a validated document"
        wires.append(
            WireSpec(
                source=source,
                target=target,
                transport=w.get("transport", DEFAULT_TRANSPORT),
                options={k: w[k] for k in WIRE_OPTION_KEYS if k in w},
            )
        )
    return Scenario(
        name=raw["name"],
        gears=gears,
        wires=tuple(wires),
        version=raw.get("version"),
        spec=raw.get("spec"),
        description=raw.get("description"),
        tests=tuple(raw.get("tests") or ()),
        expect=tuple(raw.get("expect") or ()),
        globals=dict(raw.get("globals") or {}),
    )


# ---------------------------------------------------------------- spec documents


def validate_spec(raw: object) -> list[Problem]:
    """Every problem in a spec document: name, optional version/description, `schema` a valid JSON Schema."""
    problems: list[Problem] = []
    if not isinstance(raw, Mapping):
        return [Problem("", f"a spec must be a YAML mapping with name and schema; found {describe(raw)}")]
    _check_header(raw, SPEC_KEYS, "spec", problems)
    if "schema" in raw:
        schema = raw["schema"]
        if not isinstance(schema, (Mapping, bool)):
            problems.append(Problem("schema", f"must be a JSON Schema (a mapping); found {describe(schema)}"))
        else:
            try:
                validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
            except SchemaError as exc:
                problems.append(Problem(json_path("schema", exc.absolute_path), f"not a valid JSON Schema: {exc.message}"))
    return problems


__all__ = [
    "GEAR_NAME_PATTERN",
    "build_scenario",
    "check_spec_reference",
    "did_you_mean",
    "gear_to_raw",
    "parse_endpoint",
    "scenario_to_raw",
    "spec_problem",
    "validate_scenario",
    "validate_spec",
    "wire_to_raw",
]
