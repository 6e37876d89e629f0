"""A scenario as a picture: Mermaid and Graphviz DOT text, SVG through Graphviz, and the layered
layout the mixer's live page draws.

Gears are nodes (name and type), wires are edges labelled with their ports and transport:
memory wires dashed (they live in the mixer process), standard wires solid (durable JetStream).
Nothing here runs a scenario; it only reads the parsed, validated model.

SVG is rendered by Graphviz's own `dot` (a well-kept renderer, rather than a home-made one);
without it installed, asking for SVG is a one-line error naming the package to install.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from fluxmix.errors import FluxmixError, UserError
from fluxmix.scenario import Scenario, WireSpec

FORMATS = ("mermaid", "dot", "svg")
DOT_TIMEOUT = 30.0


class GraphvizMissing(UserError):
    """SVG was asked for but Graphviz's `dot` is not installed."""


def _edge_label(wire: WireSpec) -> str:
    return f"{wire.source.port} → {wire.target.port} ({wire.transport})"


# ---- Mermaid --------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    """Mermaid quoted strings cannot hold a double quote; its entity codes can."""
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(scenario: Scenario) -> str:
    """A `flowchart LR` with one node per gear; ids are g0, g1... so any name is safe."""
    ids = {gear.name: f"g{i}" for i, gear in enumerate(scenario.gears)}
    lines = ["flowchart LR"]
    for gear in scenario.gears:
        lines.append(f'    {ids[gear.name]}["{_mermaid_text(gear.name)}<br/><i>{_mermaid_text(gear.type)}</i>"]')
    for wire in scenario.wires:
        arrow = "-.->" if wire.transport == "memory" else "-->"
        label = _mermaid_text(_edge_label(wire))
        lines.append(f'    {ids[wire.source.gear]} {arrow}|"{label}"| {ids[wire.target.gear]}')
    return "\n".join(lines) + "\n"


# ---- DOT ------------------------------------------------------------------------------------


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(scenario: Scenario) -> str:
    """A `digraph` left to right; memory wires dashed, standard wires solid."""
    lines = [
        f"digraph {_dot_string(scenario.name)} {{",
        "    rankdir=LR;",
        '    node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    for gear in scenario.gears:
        lines.append(f"    {_dot_string(gear.name)} [label={_dot_string(gear.name + chr(10) + gear.type)}];")
    for wire in scenario.wires:
        style = "dashed" if wire.transport == "memory" else "solid"
        lines.append(
            f"    {_dot_string(wire.source.gear)} -> {_dot_string(wire.target.gear)} "
            f"[label={_dot_string(_edge_label(wire))}, style={style}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_executable() -> str | None:
    return shutil.which("dot")


def to_svg(scenario: Scenario) -> bytes:
    """Render the DOT text with Graphviz; GraphvizMissing (exit 2) when `dot` is not installed."""
    dot = dot_executable()
    if dot is None:
        raise GraphvizMissing(
            "--format svg needs Graphviz's `dot` on PATH (Debian/Ubuntu: apt-get install graphviz); "
            "or use --format dot and render it elsewhere"
        )
    try:
        done = subprocess.run([dot, "-Tsvg"], input=to_dot(scenario).encode(), capture_output=True,
                              timeout=DOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise FluxmixError(f"Graphviz `dot` did not finish within {DOT_TIMEOUT:g}s") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise FluxmixError(f"Graphviz `dot` failed: {why[0] if why else f'exit status {done.returncode}'}")
    return done.stdout


# ---- layout for the live page ----------------------------------------------------------------


def layers(scenario: Scenario) -> dict[str, int]:
    """Each gear's column: the longest wire path from a source (validation refuses cycles;
    should one slip through, the loop is cut after as many rounds as there are gears)."""
    column = {gear.name: 0 for gear in scenario.gears}
    for _ in range(len(column)):
        moved = False
        for wire in scenario.wires:
            src, dst = wire.source.gear, wire.target.gear
            if src in column and dst in column and column[dst] < column[src] + 1:
                column[dst] = column[src] + 1
                moved = True
        if not moved:
            break
    return column


def layout(scenario: Scenario) -> dict[str, Any]:
    """Nodes with a column and a row, edges with ports and transport: what the page draws."""
    column = layers(scenario)
    rows: dict[int, int] = {}
    nodes = []
    for gear in scenario.gears:
        col = column[gear.name]
        nodes.append({"name": gear.name, "type": gear.type, "column": col, "row": rows.get(col, 0)})
        rows[col] = rows.get(col, 0) + 1
    edges = [
        {
            "key": wire.key,
            "from": wire.source.gear,
            "from_port": wire.source.port,
            "to": wire.target.gear,
            "to_port": wire.target.port,
            "transport": wire.transport,
        }
        for wire in scenario.wires
    ]
    return {"name": scenario.name, "nodes": nodes, "edges": edges,
            "columns": max(column.values(), default=0) + 1, "rows": max(rows.values(), default=0)}
