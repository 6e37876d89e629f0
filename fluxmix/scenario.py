"""The scenario model: what a scenario file says, as plain immutable data.

Parsing and validation live in `fluxmix.scenario_yaml` and `fluxmix.validation`; this module only
holds the shapes every other part (store, mixer, transports) exchanges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRANSPORTS = ("standard", "memory")
DEFAULT_TRANSPORT = "standard"


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
