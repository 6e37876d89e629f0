"""Pre-flight validation: one table row per rule, exact location and the key words of the reason."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from fluxmix.errors import AmbiguousReferenceError, Problem
from fluxmix.gears.base import Gear, Port
from fluxmix.gears.catalog import Catalog
from fluxmix.refs import check_spec_reference
from fluxmix.scenario import Endpoint, Scenario, WireSpec, build_scenario, parse_endpoint, scenario_to_raw
from fluxmix.scenario_yaml import load_yaml
from fluxmix.spec_validation import validate_spec
from fluxmix.validation import validate_scenario


# ---------------------------------------------------------------- a small catalog of our own


class Gen(Gear):
    type = "gen"
    outputs = (Port("out"),)
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "count": {"type": "integer", "minimum": 0},
            "rate": {"type": "number", "exclusiveMinimum": 0},
            "body": {"type": "object"},
        },
    }

    async def run(self) -> None:
        return None


class Mid(Gear):
    type = "mid"
    inputs = (Port("in", required=True),)
    outputs = (Port("out"),)
    config_schema = {"type": "object", "additionalProperties": False, "properties": {"expr": {"type": "string"}}}

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        if "!!" in config.get("expr", ""):
            return [("expr", "cannot parse expression: unexpected '!!'")]
        return []


class Sink(Gear):
    type = "sink"
    inputs = (Port("in"),)
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {"path": {"type": "string", "minLength": 1}},
    }


class Switch(Gear):
    """Outputs depend on config, like the built-in `route`."""

    type = "switch"
    inputs = (Port("in"),)
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["routes"],
        "properties": {"routes": {"type": "object", "additionalProperties": {"type": "string"}}},
    }

    @classmethod
    def output_ports(cls, config: Mapping[str, Any]) -> tuple[Port, ...]:
        return tuple(Port(name) for name in config["routes"]) + (Port("default"), Port("error"))


class Broken(Gear):
    type = "broken"
    config_schema = {"type": "object", "properties": {"x": {"type": "no-such-type"}}}


CATALOG = Catalog({"gen": Gen, "mid": Mid, "sink": Sink, "switch": Switch, "broken": Broken})

BASE: dict[str, Any] = {
    "name": "demo",
    "gears": [
        {"name": "src", "type": "gen", "config": {"count": 3}},
        {"name": "work", "type": "mid"},
        {"name": "sink", "type": "sink", "config": {"path": "out.jsonl"}},
    ],
    "wires": [
        {"from": "src.out", "to": "work.in"},
        {"from": "work.out", "to": "sink.in", "transport": "memory"},
    ],
}


def problems_of(raw: object, **kwargs: Any) -> list[Problem]:
    return validate_scenario(raw, catalog=CATALOG, **kwargs)


def test_base_is_valid() -> None:
    assert problems_of(BASE) == []


def mutated(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    change(doc)
    return doc


def wire(doc: dict[str, Any], **fields: Any) -> None:
    doc["wires"].append(fields)


def gear(doc: dict[str, Any], **fields: Any) -> None:
    doc["gears"].append(fields)


# (id, mutation, expected location, words that must appear in the reason)
RULES: list[tuple[str, Callable[[dict[str, Any]], Any], str, list[str]]] = [
    # top level
    ("unknown top-level key", lambda d: d.update(wire=[]), "wire", ["unknown top-level key 'wire'", "did you mean 'wires'?"]),
    ("name missing", lambda d: d.pop("name"), "name", ["required"]),
    ("name not a string", lambda d: d.update(name=12), "name", ["must be a string", "number 12"]),
    ("name invalid", lambda d: d.update(name="Payment Flow"), "name", ["'Payment Flow' is not a valid name"]),
    ("name path traversal", lambda d: d.update(name="../etc"), "name", ["is not a valid name"]),
    ("version not semver", lambda d: d.update(version="1.2"), "version", ["SemVer", "'1.2'"]),
    ("version a number", lambda d: d.update(version=1.2), "version", ["SemVer", "quote it"]),
    ("version build metadata", lambda d: d.update(version="1.0.0+b7"), "version", ["build metadata"]),
    ("description not a string", lambda d: d.update(description=["x"]), "description", ["must be a string"]),
    # The store's reference grammar (fluxmix.refs) words these, so validation and resolution agree.
    ("spec malformed", lambda d: d.update(spec="Visa Card"), "spec", ["bad reference 'Visa Card'", "name:tag"]),
    ("spec bad tag", lambda d: d.update(spec="visa:one"), "spec", ["tag 'one'", "not a SemVer version"]),
    ("spec a path", lambda d: d.update(spec="specs/visa.yaml"), "spec", ["is a file path, not a store reference"]),
    ("version longer than a tag", lambda d: d.update(version="1.0.0-" + "a" * 130), "version", ["SemVer"]),
    ("spec not a string", lambda d: d.update(spec={"name": "visa"}), "spec", ["spec reference", "a mapping"]),
    # gears
    ("gears missing", lambda d: d.pop("gears"), "gears", ["required"]),
    ("gears empty", lambda d: d.update(gears=[], wires=[]), "gears", ["at least one gear"]),
    ("gears not a list", lambda d: d.update(gears={"src": {}}, wires=[]), "gears", ["must be a list", "a mapping"]),
    ("gear not a mapping", lambda d: d["gears"].append("log"), "gears[3]", ["must be a mapping", "'log'"]),
    ("gear unknown key", lambda d: d["gears"][0].update(typ="gen"), "gears[0].typ", ["unknown gear key 'typ'", "did you mean 'type'?"]),
    ("gear name missing", lambda d: gear(d, type="sink", config={"path": "x"}), "gears[3].name", ["required"]),
    ("gear name invalid", lambda d: gear(d, name="Big Sink", type="sink", config={"path": "x"}), "gears[3].name", ["not a valid gear name"]),
    ("gear name with dot", lambda d: gear(d, name="a.b", type="sink", config={"path": "x"}), "gears[3].name", ["no dots"]),
    ("gear name duplicate", lambda d: gear(d, name="sink", type="sink", config={"path": "y"}), "gears[3].name", ["duplicate gear name 'sink'", "gears[2]"]),
    ("gear type missing", lambda d: d["gears"][2].pop("type"), "gears[2].type", ["required", "known: broken, gen, mid, sink, switch"]),
    ("gear type unknown", lambda d: d["gears"][2].update(type="sinc"), "gears[2].type", ["unknown gear type 'sinc'", "did you mean 'sink'?"]),
    ("gear type not a string", lambda d: d["gears"][2].update(type=3), "gears[2].type", ["must be a string"]),
    ("config not a mapping", lambda d: d["gears"][2].update(config=["out.jsonl"]), "gears[2].config", ["must be a mapping", "a list"]),
    ("config schema: type", lambda d: d["gears"][0]["config"].update(count="many"), "gears[0].config.count", ["'many' is not of type 'integer'"]),
    ("config schema: minimum", lambda d: d["gears"][0]["config"].update(count=-1), "gears[0].config.count", ["-1 is less than the minimum of 0"]),
    ("config schema: required", lambda d: d["gears"][2].update(config={}), "gears[2].config", ["'path' is a required property"]),
    ("config schema: unknown key", lambda d: d["gears"][0]["config"].update(rat=5), "gears[0].config.rat", ["unknown config key 'rat'", "did you mean 'rate'?", "known: count, rate, body"]),
    ("config schema: nested path", lambda d: d["gears"].append({"name": "sw", "type": "switch", "config": {"routes": {"eur": 3}}}), "gears[3].config.routes.eur", ["3 is not of type 'string'"]),
    ("config check_config", lambda d: d["gears"][1].update(config={"expr": "a !! b"}), "gears[1].config.expr", ["cannot parse expression"]),
    ("config schema invalid (gear bug)", lambda d: gear(d, name="bad", type="broken"), "gears[3].config", ["invalid config schema"]),
    # wires
    ("wires not a list", lambda d: d.update(wires={"from": "src.out"}), "wires", ["must be a list", "a mapping"]),
    ("wire not a mapping", lambda d: d["wires"].append("src.out -> sink.in"), "wires[2]", ["must be a mapping"]),
    ("wire unknown key", lambda d: wire(d, **{"from": "src.out", "to": "sink.in", "tranport": "memory"}), "wires[2].tranport", ["unknown wire key 'tranport'", "did you mean 'transport'?"]),
    ("wire from missing", lambda d: wire(d, to="sink.in"), "wires[2].from", ["required", "gear.port"]),
    ("wire to missing", lambda d: wire(d, **{"from": "src.out"}), "wires[2].to", ["required", "gear.port"]),
    ("wire from malformed", lambda d: wire(d, **{"from": "src", "to": "sink.in"}), "wires[2].from", ["'src' is not gear.port", "did you mean 'src.out'?"]),
    ("wire to not a string", lambda d: wire(d, **{"from": "src.out", "to": 5}), "wires[2].to", ["the number 5 is not gear.port"]),
    ("wire unknown gear", lambda d: wire(d, **{"from": "src.out", "to": "snk.in"}), "wires[2].to", ["gear 'snk' is not defined", "did you mean 'sink'?"]),
    ("wire misspelt required target", lambda d: d["wires"][0].update(to="wrok.in"), "wires[0].to", ["gear 'wrok' is not defined", "did you mean 'work'?"]),
    ("wire unknown port", lambda d: wire(d, **{"from": "src.out", "to": "sink.inn"}), "wires[2].to", ["has no input port 'inn'", "did you mean 'in'?", "inputs: in"]),
    ("wire unknown output port", lambda d: wire(d, **{"from": "src.output", "to": "sink.in"}), "wires[2].from", ["has no output port 'output'", "outputs: out"]),
    ("wire from an input", lambda d: wire(d, **{"from": "sink.in", "to": "work.in"}), "wires[2].from", ["sink.in is an input port", "'from' must name an output"]),
    ("wire to an output", lambda d: wire(d, **{"from": "src.out", "to": "work.out"}), "wires[2].to", ["work.out is an output port", "'to' must name an input"]),
    ("wire duplicate", lambda d: wire(d, **{"from": "src.out", "to": "work.in"}), "wires[2]", ["duplicate wire src.out -> work.in", "wires[0]"]),
    ("wire unknown transport", lambda d: d["wires"][0].update(transport="memroy"), "wires[0].transport", ["unknown transport 'memroy'", "did you mean 'memory'?"]),
    ("queue_size on standard", lambda d: d["wires"][0].update(queue_size=10), "wires[0].queue_size", ["only to memory wires"]),
    ("queue_size out of range", lambda d: d["wires"][1].update(queue_size=0), "wires[1].queue_size", ["from 1 to 1_000_000"]),
    ("queue_size not an int", lambda d: d["wires"][1].update(queue_size=2.5), "wires[1].queue_size", ["whole number"]),
    ("max_deliver invalid", lambda d: d["wires"][0].update(max_deliver=0), "wires[0].max_deliver", [">= 1"]),
    ("max_deliver bool", lambda d: d["wires"][0].update(max_deliver=True), "wires[0].max_deliver", ["boolean true"]),
    ("retry_delay negative", lambda d: d["wires"][0].update(retry_delay=-0.5), "wires[0].retry_delay", ["seconds >= 0"]),
    ("retry_delay not a number", lambda d: d["wires"][0].update(retry_delay="1s"), "wires[0].retry_delay", ["seconds >= 0", "'1s'"]),
    ("retry_delay infinite", lambda d: d["wires"][0].update(retry_delay=float("inf")), "wires[0].retry_delay", ["seconds >= 0"]),
    ("backlog on memory", lambda d: d["wires"][1].update(backlog=10), "wires[1].backlog", ["only to standard wires", "queue_size"]),
    ("backlog out of range", lambda d: d["wires"][0].update(backlog=0), "wires[0].backlog", ["from 1 to 100_000_000"]),
    ("backlog not an int", lambda d: d["wires"][0].update(backlog="lots"), "wires[0].backlog", ["whole number", "'lots'"]),
    ("cycle", lambda d: (gear(d, name="back", type="mid"), wire(d, **{"from": "work.out", "to": "back.in"}), wire(d, **{"from": "back.out", "to": "work.in"})), "wires[2]", ["cycle", "work -> back -> work", "deadlock"]),
    ("self loop", lambda d: wire(d, **{"from": "work.out", "to": "work.in"}), "wires[2]", ["cycle", "work -> work"]),
    ("required input unwired", lambda d: gear(d, name="lonely", type="mid"), "gears[3]", ["input lonely.in is required", "no wire"]),
]


@pytest.mark.parametrize(("change", "location", "words"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule(change: Callable[[dict[str, Any]], Any], location: str, words: list[str]) -> None:
    problems = problems_of(mutated(change))
    matching = [p for p in problems if p.location == location]
    assert matching, f"no problem at {location!r}; got {[str(p) for p in problems]}"
    assert len(problems) == 1, f"one mistake, one problem (no cascades): {[str(p) for p in problems]}"
    for word in words:
        assert word in matching[0].reason, f"{word!r} not in {matching[0].reason!r}"


def test_top_level_not_a_mapping() -> None:
    assert [str(p) for p in problems_of(["name", "demo"])] == [
        "a scenario must be a YAML mapping with name, gears and wires; found a list"
    ]
    assert problems_of(None)[0].location == ""


def test_spec_that_does_not_resolve() -> None:
    doc = mutated(lambda d: d.update(spec="visa:v9.9.9"))
    problems = problems_of(doc, spec_resolves=lambda ref: None)
    assert [str(p) for p in problems] == [
        "spec: spec 'visa:v9.9.9' is not in the store; import it first with `fluxmix spec import`"
    ]
    assert problems_of(doc, spec_resolves=lambda ref: "ab" * 32) == []
    assert problems_of(doc) == [], "without a resolver, spec references are not checked"


def test_spec_resolver_error_is_a_problem() -> None:
    def ambiguous(ref: str) -> str | None:
        raise AmbiguousReferenceError("sha256:abcdefabcdef matches 2 blobs")

    doc = mutated(lambda d: d.update(spec="sha256:abcdefabcdef"))
    (problem,) = problems_of(doc, spec_resolves=ambiguous)
    assert problem.location == "spec" and "matches 2 blobs" in problem.reason


def test_every_problem_reported_at_once() -> None:
    text = b"""
name: Demo
versoin: 1.0.0
gears:
  - name: src
    type: gen
    config: {count: -1, rat: 3}
  - name: work
    type: mdi
  - name: sink
    type: sink
    config: {path: out.jsonl}
  - name: sink
    type: sink
    config: {path: other.jsonl}
wires:
  - {from: src.out, to: wrok.in}
  - {from: src.out, to: sink.inn, transport: memroy, queue_size: 0}
"""
    problems = problems_of(load_yaml(text, "many.yaml"))
    assert [str(p) for p in problems] == [
        "versoin: unknown top-level key 'versoin'; did you mean 'version'? "
        "(allowed: name, version, spec, description, gears, wires, tests, expect, globals)",
        "name: 'Demo' is not a valid name: 1-64 characters of a-z 0-9 . _ -, starting with a letter or digit",
        "gears[0].config.rat: unknown config key 'rat' for gear type 'gen'; did you mean 'rate'? (known: count, rate, body)",
        "gears[0].config.count: -1 is less than the minimum of 0",
        "gears[1].type: unknown gear type 'mdi'; did you mean 'mid'? (known: broken, gen, mid, sink, switch)",
        "gears[3].name: duplicate gear name 'sink' (also gears[2])",
        "wires[0].to: gear 'wrok' is not defined; did you mean 'work'?",
        "wires[1].to: gear 'sink' (sink) has no input port 'inn'; did you mean 'in'? (inputs: in)",
        "wires[1].transport: unknown transport 'memroy'; did you mean 'memory'? (known: standard | memory)",
        "wires[1].queue_size: must be a whole number from 1 to 1_000_000; found the number 0",
    ]


def test_no_cascade_from_a_gear_with_bad_config() -> None:
    doc = mutated(lambda d: d["gears"][0]["config"].update(count="x"))
    assert [p.location for p in problems_of(doc)] == ["gears[0].config.count"]


def test_config_dependent_ports() -> None:
    doc = mutated(
        lambda d: (
            gear(d, name="sw", type="switch", config={"routes": {"eur": "currency == 'EUR'"}}),
            wire(d, **{"from": "work.out", "to": "sw.in"}),
            wire(d, **{"from": "sw.eur", "to": "sink.in"}),
            wire(d, **{"from": "sw.default", "to": "sink.in"}),
            wire(d, **{"from": "sw.usd", "to": "sink.in"}),
        )
    )
    (problem,) = problems_of(doc)
    assert problem.location == "wires[5].from"
    assert "no output port 'usd'" in problem.reason and "outputs: eur, default, error" in problem.reason


def test_error_port_and_fan_in_fan_out_are_fine() -> None:
    doc = mutated(
        lambda d: (
            gear(d, name="dead", type="sink", config={"path": "dead.jsonl"}),
            wire(d, **{"from": "work.error", "to": "dead.in"}),
            wire(d, **{"from": "src.out", "to": "sink.in", "transport": "memory", "queue_size": 5}),
        )
    )
    assert problems_of(doc) == []


def test_wires_may_be_absent_or_empty() -> None:
    doc = {"name": "solo", "gears": [{"name": "src", "type": "gen"}]}
    assert problems_of(doc) == []
    assert problems_of({**doc, "wires": []}) == []
    assert problems_of({**doc, "wires": None}) == []


def test_unwired_optional_input_is_fine() -> None:
    doc = {"name": "solo", "gears": [{"name": "sink", "type": "sink", "config": {"path": "x"}}]}
    assert problems_of(doc) == []


def test_larger_cycle_named_once() -> None:
    doc = {
        "name": "ring",
        "gears": [{"name": n, "type": "mid"} for n in ("a", "b", "c")] + [{"name": "src", "type": "gen"}],
        "wires": [
            {"from": "src.out", "to": "a.in"},
            {"from": "a.out", "to": "b.in"},
            {"from": "b.out", "to": "c.in"},
            {"from": "c.out", "to": "a.in"},
        ],
    }
    problems = problems_of(doc)
    assert [str(p) for p in problems] == [
        "wires[1]: wires form a cycle: a -> b -> c -> a (wires [1], [2], [3]); a cycle of bounded queues can deadlock"
    ]


def test_validates_a_scenario_object() -> None:
    scenario = build_scenario(BASE)
    assert validate_scenario(scenario, catalog=CATALOG) == []
    broken = Scenario(
        name=scenario.name,
        gears=scenario.gears,
        wires=scenario.wires + (WireSpec(Endpoint("src", "out"), Endpoint("nowhere", "in")),),
    )
    assert [p.location for p in validate_scenario(broken, catalog=CATALOG)] == ["wires[2].to"]


def test_build_scenario() -> None:
    doc = mutated(
        lambda d: (
            d.update(version="v1.2.0", spec="visa:v1.0.0", description="demo flow"),
            d["wires"][1].update(queue_size=50, max_deliver=3, retry_delay=0.1),
        )
    )
    scenario = build_scenario(doc)
    assert scenario.name == "demo" and scenario.version == "v1.2.0" and scenario.spec == "visa:v1.0.0"
    assert scenario.description == "demo flow"
    assert [g.name for g in scenario.gears] == ["src", "work", "sink"]
    assert scenario.gear("work").config == {}
    first, second = scenario.wires
    assert first.source == Endpoint("src", "out") and first.target == Endpoint("work", "in")
    assert first.transport == "standard" and first.options == {}
    assert second.transport == "memory"
    assert second.options == {"queue_size": 50, "max_deliver": 3, "retry_delay": 0.1}
    assert scenario.transports == {"standard", "memory"}
    assert build_scenario(scenario_to_raw(scenario)) == scenario


def test_null_config_means_empty() -> None:
    doc = mutated(lambda d: d["gears"][1].update(config=None))
    assert problems_of(doc) == []
    assert build_scenario(doc).gear("work").config == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("src.out", Endpoint("src", "out")),
        ("my-gear.high_value", Endpoint("my-gear", "high_value")),
        ("src", None),
        ("src.", None),
        (".out", None),
        ("a.b.c", None),
        ("Src.out", None),
        (None, None),
    ],
)
def test_parse_endpoint(text: object, expected: Endpoint | None) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    "ref",
    # SHA256: and uppercase hex: the store always resolved them; validation refused them (issue 9).
    ["visa", "visa:v1.0.0", "visa:1.0.0", "visa:latest", "sha256:" + "a" * 12, "sha256:" + "0" * 64, "SHA256:" + "AB" * 6],
)
def test_good_spec_references(ref: str) -> None:
    assert check_spec_reference(ref) is None


@pytest.mark.parametrize("ref", ["", "Visa", "visa:", "visa:x", "sha256:abc", "sha256:" + "g" * 12, "../visa", 3])
def test_bad_spec_references(ref: object) -> None:
    assert check_spec_reference(ref) is not None


# ---------------------------------------------------------------- specs


def test_valid_spec() -> None:
    raw = {
        "name": "visa",
        "version": "1.0.0",
        "description": "card payments",
        "schema": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}},
    }
    assert validate_spec(raw) == []
    assert validate_spec({"name": "any"}) == []


@pytest.mark.parametrize(
    ("raw", "location", "words"),
    [
        ([1], "", ["must be a YAML mapping"]),
        ({"schema": {}}, "name", ["required"]),
        ({"name": "visa", "shema": {}}, "shema", ["did you mean 'schema'?"]),
        ({"name": "visa", "version": "one"}, "version", ["SemVer"]),
        ({"name": "visa", "description": 1}, "description", ["must be a string"]),
        ({"name": "visa", "schema": "object"}, "schema", ["must be a JSON Schema"]),
        ({"name": "visa", "schema": {"type": "objekt"}}, "schema.type", ["not a valid JSON Schema"]),
        ({"name": "visa", "schema": {"properties": {"a": {"minimum": "x"}}}}, "schema.properties.a.minimum", ["not a valid JSON Schema"]),
    ],
)
def test_spec_problems(raw: object, location: str, words: list[str]) -> None:
    problems = validate_spec(raw)
    assert [p.location for p in problems] == [location], problems
    for word in words:
        assert word in problems[0].reason


# ---------------------------------------------------------------- with the real built-in catalog


def test_builtin_catalog_problems() -> None:
    text = b"""
name: real
gears:
  - {name: src, type: generate, config: {count: 3, rat: 2}}
  - {name: big, type: filter, config: {where: "amount >"}}
  - {name: split, type: route, config: {routes: {eur: 'currency == "EUR"'}}}
  - {name: calc, type: map, config: {set: {x: {expr: "__import__('os')"}}}}
  - {name: sink, type: file-out}
  - {name: loud, type: log, config: {level: loud}}
  - {name: eur, type: log}
wires:
  - {from: src.out, to: split.in}
  - {from: split.usd, to: eur.in}
  - {from: split.eur, to: eur.in}
  - {from: split.default, to: eur.in}
"""
    problems = validate_scenario(load_yaml(text, "real.yaml"), catalog=Catalog.default())
    found = {p.location: p.reason for p in problems}
    assert list(found) == [
        "gears[0].config.rat",
        "gears[1].config.where",
        "gears[3].config.set.x.expr",
        "gears[4].config",
        "gears[5].config.level",
        "wires[1].from",
        # A bad config no longer hides the gear's wiring problems (issue 8: every problem at once).
        "gears[1]",
        "gears[3]",
        "gears[4]",
        "gears[5]",
    ]
    assert "did you mean 'rate'?" in found["gears[0].config.rat"]
    assert "invalid expression" in found["gears[1].config.where"]
    assert "__import__" in found["gears[3].config.set.x.expr"]
    assert "'path' is a required property" in found["gears[4].config"]
    assert "no output port 'usd'" in found["wires[1].from"] and "eur, default, error" in found["wires[1].from"]


def test_builtin_required_inputs() -> None:
    raw = {
        "name": "lonely",
        "gears": [{"name": "src", "type": "generate"}, {"name": "sink", "type": "file-out", "config": {"path": "x"}}],
    }
    problems = validate_scenario(raw, catalog=Catalog.default())
    assert [str(p) for p in problems] == ["gears[1]: input sink.in is required but no wire delivers to it"]


# ---------------------------------------------------------------- never a traceback


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_WORDS = st.sampled_from(
    ["name", "gears", "wires", "type", "config", "from", "to", "transport", "memory", "standard", "src", "sink",
     "work", "gen", "mid", "switch", "src.out", "work.in", "sink.in", "work.out", "queue_size", "routes", "path", "x"]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | _WORDS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_WORDS, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON)
def test_any_document_gives_problems_not_exceptions(raw: object) -> None:
    problems = validate_scenario(raw, catalog=CATALOG, spec_resolves=lambda ref: None)
    assert all(isinstance(p, Problem) and p.reason for p in problems)
    if not problems:
        build_scenario(raw)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c", "d"]), "type": st.sampled_from(["gen", "mid", "sink", "switch"])}), min_size=1, max_size=4),
    st.lists(st.fixed_dictionaries({"from": st.sampled_from(["a.out", "b.out", "c.out", "d.default", "a.error"]), "to": st.sampled_from(["a.in", "b.in", "c.in", "d.in"])}), max_size=6),
)
def test_random_topologies_give_problems_not_exceptions(gears: list[dict[str, Any]], wires: list[dict[str, Any]]) -> None:
    for g in gears:
        if g["type"] == "sink":
            g["config"] = {"path": "x"}
        if g["type"] == "switch":
            g["config"] = {"routes": {"r": "x"}}
    raw = {"name": "fuzz", "gears": gears, "wires": wires}
    problems = validate_scenario(raw, catalog=CATALOG)
    if not problems:
        build_scenario(raw)
