"""What changed between two scenarios, at the level operators think in: gears and wires.

A text diff shows edits to comments and key order too; `diff_scenarios` answers "what will the
mixer do differently": which gears appear, disappear or change type/config, which wires appear,
disappear or change transport/options. `text_diff` is the plain unified diff for `--text`.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from fluxmix.scenario import GearSpec, Scenario, WireSpec, gear_to_raw, wire_to_raw

_MISSING = object()
_SCALAR_FIELDS = ("name", "version", "spec", "description", "expect", "tests", "globals")  # the last three: checks and state, not topology


@dataclass(frozen=True, slots=True)
class GearChange:
    """A gear present in both scenarios whose type or config differs."""

    name: str
    old_type: str
    new_type: str
    changed_keys: tuple[str, ...]  # top-level config keys added, removed or changed
    old_config: dict[str, Any] = field(hash=False)
    new_config: dict[str, Any] = field(hash=False)

    @property
    def type_changed(self) -> bool:
        return self.old_type != self.new_type

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "old_type": self.old_type,
            "new_type": self.new_type,
            "changed_keys": list(self.changed_keys),
            "config": {
                key: {"old": self.old_config.get(key), "new": self.new_config.get(key)} for key in self.changed_keys
            },
        }


@dataclass(frozen=True, slots=True)
class WireChange:
    """A wire (same from and to) whose transport or options differ."""

    key: str
    old_transport: str
    new_transport: str
    old_options: dict[str, Any] = field(hash=False)
    new_options: dict[str, Any] = field(hash=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "wire": self.key,
            "old_transport": self.old_transport,
            "new_transport": self.new_transport,
            "old_options": dict(self.old_options),
            "new_options": dict(self.new_options),
        }


@dataclass(frozen=True, slots=True)
class ScenarioDiff:
    """Gear- and wire-level differences; `fields` holds changed name/version/spec/description."""

    fields: dict[str, tuple[Any, Any]]
    added_gears: tuple[GearSpec, ...]
    removed_gears: tuple[GearSpec, ...]
    changed_gears: tuple[GearChange, ...]
    added_wires: tuple[WireSpec, ...]
    removed_wires: tuple[WireSpec, ...]
    changed_wires: tuple[WireChange, ...]

    @property
    def empty(self) -> bool:
        return not (
            self.fields
            or self.added_gears
            or self.removed_gears
            or self.changed_gears
            or self.added_wires
            or self.removed_wires
            or self.changed_wires
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for `fluxmix scenario diff --json`."""
        return {
            "empty": self.empty,
            "fields": {k: {"old": old, "new": new} for k, (old, new) in self.fields.items()},
            "gears": {
                "added": [gear_to_raw(g) for g in self.added_gears],
                "removed": [gear_to_raw(g) for g in self.removed_gears],
                "changed": [c.as_dict() for c in self.changed_gears],
            },
            "wires": {
                "added": [wire_to_raw(w) for w in self.added_wires],
                "removed": [wire_to_raw(w) for w in self.removed_wires],
                "changed": [c.as_dict() for c in self.changed_wires],
            },
        }

    def render(self) -> str:
        """Readable text: `+` added, `-` removed, `~` changed; one line per gear or wire."""
        if self.empty:
            return "no changes to gears or wires"
        lines: list[str] = []
        for key, (old, new) in self.fields.items():
            lines.append(f"~ {key}: {_show(old)} -> {_show(new)}")
        if self.added_gears or self.removed_gears or self.changed_gears:
            lines.append("gears:")
            lines += [f"  + {g.name} ({g.type})" for g in self.added_gears]
            lines += [f"  - {g.name} ({g.type})" for g in self.removed_gears]
            for change in self.changed_gears:
                parts = []
                if change.type_changed:
                    parts.append(f"type {change.old_type} -> {change.new_type}")
                for key in change.changed_keys:
                    parts.append(
                        f"config.{key}: {_show(change.old_config.get(key, _MISSING))} -> "
                        f"{_show(change.new_config.get(key, _MISSING))}"
                    )
                lines.append(f"  ~ {change.name} ({change.new_type}): {'; '.join(parts)}")
        if self.added_wires or self.removed_wires or self.changed_wires:
            lines.append("wires:")
            lines += [f"  + {w.key} ({_wire_label(w.transport, w.options)})" for w in self.added_wires]
            lines += [f"  - {w.key} ({_wire_label(w.transport, w.options)})" for w in self.removed_wires]
            for change in self.changed_wires:
                lines.append(
                    f"  ~ {change.key}: {_wire_label(change.old_transport, change.old_options)} -> "
                    f"{_wire_label(change.new_transport, change.new_options)}"
                )
        return "\n".join(lines)


def diff_scenarios(old: Scenario, new: Scenario) -> ScenarioDiff:
    """Compare by gear name and by wire endpoints (from, to); order in the file does not matter."""
    fields = {
        name: (getattr(old, name), getattr(new, name))
        for name in _SCALAR_FIELDS
        if getattr(old, name) != getattr(new, name)
    }
    old_gears = {g.name: g for g in old.gears}
    new_gears = {g.name: g for g in new.gears}
    changed_gears = []
    for name in old_gears.keys() & new_gears.keys():
        before, after = old_gears[name], new_gears[name]
        keys = tuple(
            sorted(
                k
                for k in before.config.keys() | after.config.keys()
                if before.config.get(k, _MISSING) != after.config.get(k, _MISSING)
            )
        )
        if keys or before.type != after.type:
            changed_gears.append(GearChange(name, before.type, after.type, keys, dict(before.config), dict(after.config)))

    old_wires = {w.key: w for w in old.wires}
    new_wires = {w.key: w for w in new.wires}
    changed_wires = []
    for key in old_wires.keys() & new_wires.keys():
        before_w, after_w = old_wires[key], new_wires[key]
        if before_w.transport != after_w.transport or dict(before_w.options) != dict(after_w.options):
            changed_wires.append(
                WireChange(key, before_w.transport, after_w.transport, dict(before_w.options), dict(after_w.options))
            )

    return ScenarioDiff(
        fields=fields,
        added_gears=tuple(new_gears[n] for n in new_gears if n not in old_gears),
        removed_gears=tuple(old_gears[n] for n in old_gears if n not in new_gears),
        changed_gears=tuple(sorted(changed_gears, key=lambda c: c.name)),
        added_wires=tuple(new_wires[k] for k in new_wires if k not in old_wires),
        removed_wires=tuple(old_wires[k] for k in old_wires if k not in new_wires),
        changed_wires=tuple(sorted(changed_wires, key=lambda c: c.key)),
    )


def text_diff(old_bytes: bytes, new_bytes: bytes, old_label: str, new_label: str) -> str:
    """A unified diff of the two documents' text ("" when identical)."""
    old_lines = old_bytes.decode("utf-8", errors="replace").splitlines(keepends=True)
    new_lines = new_bytes.decode("utf-8", errors="replace").splitlines(keepends=True)
    out = []
    for line in difflib.unified_diff(old_lines, new_lines, fromfile=old_label, tofile=new_label):
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
    return "".join(out)


def _wire_label(transport: str, options: dict[str, Any]) -> str:
    extras = ", ".join(f"{k}={_show(v)}" for k, v in sorted(options.items()))
    return f"{transport}, {extras}" if extras else transport


def _show(value: Any, limit: int = 60) -> str:
    if value is _MISSING:
        return "(unset)"
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["GearChange", "ScenarioDiff", "WireChange", "diff_scenarios", "text_diff"]
