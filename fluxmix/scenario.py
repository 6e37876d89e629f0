"""The scenario model: what a scenario file says, as plain immutable data, and its YAML shape.

Parsing and validation live in `fluxmix.scenario_yaml` and `fluxmix.validation`; this module
holds the shapes every other part (store, mixer, transports) exchanges, and the two converters
between them and the raw mapping a scenario file holds (`build_scenario`, `scenario_to_raw`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fluxmix.refs import GEAR_NAME_PATTERN, PORT_PATTERN

TRANSPORTS = ("standard", "memory")
DEFAULT_TRANSPORT = "standard"
WIRE_OPTION_KEYS = ("queue_size", "max_deliver", "retry_delay", "backlog", "chain")


@dataclass(frozen=True, slots=True)
class Endpoint:
    gear: str
    port: str

    def __str__(self) -> str:
        return f"{self.gear}.{self.port}"


@dataclass(frozen=True, slots=True)
class GearSpec:
    name: str
    type: str
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True, slots=True)
class WireSpec:
    source: Endpoint  # `from:` in YAML
    target: Endpoint  # `to:` in YAML
    transport: str = DEFAULT_TRANSPORT
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    @property
    def key(self) -> str:
        """Stable identity of a wire inside a scenario, used for names that must survive reloads."""
        return f"{self.source}->{self.target}"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    gears: tuple[GearSpec, ...]
    wires: tuple[WireSpec, ...]
    version: str | None = None
    spec: str | None = None
    description: str | None = None
    # `tests:` and `expect:` (fluxmix.checks.sections): the tests as validated raw mappings, the
    # expectations as their text; neither changes what runs, only how it is checked.
    tests: tuple[Any, ...] = field(default=(), hash=False, compare=True)
    expect: tuple[str, ...] = ()
    # `globals:` (fluxmix.checks.globals_section): key -> {initial, schema, description}.
    globals: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    def gear(self, name: str) -> GearSpec:
        for g in self.gears:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def transports(self) -> set[str]:
        return {w.transport for w in self.wires}


def parse_endpoint(value: object) -> Endpoint | None:
    """`gear.port` -> Endpoint, or None when malformed. Gear names hold no dots; ports may not either."""
    if not isinstance(value, str):
        return None
    gear, sep, port = value.partition(".")
    if not sep or not GEAR_NAME_PATTERN.fullmatch(gear) or not PORT_PATTERN.fullmatch(port):
        return None
    return Endpoint(gear, port)


def build_scenario(raw: Mapping[str, Any]) -> Scenario:
    """The immutable `Scenario` of a document that `fluxmix.validation.validate_scenario` accepted."""
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
