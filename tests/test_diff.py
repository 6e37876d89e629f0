"""Gear- and wire-level scenario diff, and the unified text diff behind `--text`."""

from __future__ import annotations

import json

from fluxmix.diff import diff_scenarios, text_diff
from fluxmix.scenario import Endpoint, GearSpec, Scenario, WireSpec


def scenario(gears: list[GearSpec], wires: list[WireSpec], **fields: object) -> Scenario:
    return Scenario(name=str(fields.pop("name", "flow")), gears=tuple(gears), wires=tuple(wires), **fields)  # type: ignore[arg-type]


def w(source: str, target: str, transport: str = "standard", **options: object) -> WireSpec:
    return WireSpec(Endpoint(*source.split(".")), Endpoint(*target.split(".")), transport, dict(options))


OLD = scenario(
    [
        GearSpec("src", "generate", {"count": 10, "rate": 5}),
        GearSpec("enrich", "map", {"set": {"x": "1"}}),
        GearSpec("old-sink", "log", {}),
        GearSpec("out", "file-out", {"path": "a.jsonl"}),
    ],
    [
        w("src.out", "enrich.in"),
        w("enrich.out", "old-sink.in"),
        w("enrich.out", "out.in", "memory", queue_size=10),
    ],
    version="1.0.0",
)

NEW = scenario(
    [
        GearSpec("out", "file-out", {"path": "b.jsonl"}),
        GearSpec("src", "generate", {"count": 20, "body": {"a": 1}}),
        GearSpec("enrich", "filter", {"where": "x > 1"}),
        GearSpec("audit", "log", {}),
    ],
    [
        w("src.out", "enrich.in"),
        w("enrich.out", "out.in", "memory", queue_size=100),
        w("enrich.out", "audit.in", "memory"),
    ],
    version="1.1.0",
)


def test_identical_is_empty() -> None:
    diff = diff_scenarios(OLD, OLD)
    assert diff.empty
    assert diff.render() == "no changes to gears or wires"
    assert diff.as_dict()["empty"] is True


def test_order_does_not_matter() -> None:
    shuffled = scenario(list(reversed(OLD.gears)), list(reversed(OLD.wires)), version="1.0.0")
    assert diff_scenarios(OLD, shuffled).empty


def test_gear_and_wire_changes() -> None:
    diff = diff_scenarios(OLD, NEW)
    assert not diff.empty
    assert diff.fields == {"version": ("1.0.0", "1.1.0")}
    assert [g.name for g in diff.added_gears] == ["audit"]
    assert [g.name for g in diff.removed_gears] == ["old-sink"]
    changed = {c.name: c for c in diff.changed_gears}
    assert set(changed) == {"enrich", "out", "src"}
    assert changed["src"].changed_keys == ("body", "count", "rate")
    assert not changed["src"].type_changed
    assert changed["enrich"].type_changed and (changed["enrich"].old_type, changed["enrich"].new_type) == ("map", "filter")
    assert changed["out"].changed_keys == ("path",)
    assert [x.key for x in diff.added_wires] == ["enrich.out->audit.in"]
    assert [x.key for x in diff.removed_wires] == ["enrich.out->old-sink.in"]
    (wire_change,) = diff.changed_wires
    assert wire_change.key == "enrich.out->out.in"
    assert (wire_change.old_options, wire_change.new_options) == ({"queue_size": 10}, {"queue_size": 100})


def test_transport_change() -> None:
    before = scenario([GearSpec("a", "generate"), GearSpec("b", "log")], [w("a.out", "b.in")])
    after = scenario([GearSpec("a", "generate"), GearSpec("b", "log")], [w("a.out", "b.in", "memory")])
    (change,) = diff_scenarios(before, after).changed_wires
    assert (change.old_transport, change.new_transport) == ("standard", "memory")
    assert "~ a.out->b.in: standard -> memory" in diff_scenarios(before, after).render()


def test_render() -> None:
    text = diff_scenarios(OLD, NEW).render()
    assert text.splitlines() == [
        '~ version: "1.0.0" -> "1.1.0"',
        "gears:",
        "  + audit (log)",
        "  - old-sink (log)",
        '  ~ enrich (filter): type map -> filter; config.set: {"x": "1"} -> (unset); config.where: (unset) -> "x > 1"',
        '  ~ out (file-out): config.path: "a.jsonl" -> "b.jsonl"',
        '  ~ src (generate): config.body: (unset) -> {"a": 1}; config.count: 10 -> 20; config.rate: 5 -> (unset)',
        "wires:",
        "  + enrich.out->audit.in (memory)",
        "  - enrich.out->old-sink.in (standard)",
        "  ~ enrich.out->out.in: memory, queue_size=10 -> memory, queue_size=100",
    ]


def test_as_dict_is_json_ready() -> None:
    value = diff_scenarios(OLD, NEW).as_dict()
    assert json.loads(json.dumps(value)) == value
    assert value["gears"]["added"] == [{"name": "audit", "type": "log", "config": {}}]
    assert value["gears"]["changed"][0]["name"] == "enrich"
    assert value["wires"]["removed"] == [{"from": "enrich.out", "to": "old-sink.in", "transport": "standard"}]
    assert value["wires"]["changed"] == [
        {
            "wire": "enrich.out->out.in",
            "old_transport": "memory",
            "new_transport": "memory",
            "old_options": {"queue_size": 10},
            "new_options": {"queue_size": 100},
        }
    ]
    assert value["fields"] == {"version": {"old": "1.0.0", "new": "1.1.0"}}


def test_long_values_are_shortened_in_render() -> None:
    before = scenario([GearSpec("a", "generate", {"body": {"text": "x" * 500}})], [])
    after = scenario([GearSpec("a", "generate", {"body": {"text": "y" * 500}})], [])
    line = diff_scenarios(before, after).render().splitlines()[1]
    assert len(line) < 200 and "…" in line


def test_text_diff() -> None:
    old = b"name: a\ngears: []\n"
    new = b"name: b\ngears: []\n"
    assert text_diff(old, new, "a.yaml", "b.yaml") == (
        "--- a.yaml\n+++ b.yaml\n@@ -1,2 +1,2 @@\n-name: a\n+name: b\n gears: []\n"
    )
    assert text_diff(old, old, "a", "b") == ""


def test_text_diff_missing_final_newline() -> None:
    out = text_diff(b"a\nb", b"a\nc", "x", "y")
    assert out.endswith("-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n")
