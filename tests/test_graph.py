"""`fluxmix scenario graph`: Mermaid, DOT (rendered by the real Graphviz `dot`) and SVG."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from fluxmix import graph
from fluxmix.cli.main import root
from fluxmix.gears.catalog import Catalog
from fluxmix.loading import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
PAYMENTS = ROOT / "scenarios" / "payments.yaml"
MIXED = """\
name: mixed
gears:
  - {name: source, type: generate, config: {count: 3}}
  - {name: keep, type: filter, config: {where: 'seq > 1'}}
  - {name: sink, type: log}
  - {name: bin, type: log}
wires:
  - {from: source.out, to: keep.in, transport: memory}
  - {from: keep.out, to: sink.in}
  - {from: keep.rejected, to: bin.in, transport: memory}
"""


def needs_dot() -> str:
    """Graphviz's dot; .ci/run installs it, so under CI=true its absence is a failure."""
    dot = shutil.which("dot")
    if dot is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Graphviz `dot` is not installed (.ci/run installs the Debian package graphviz)")
        pytest.skip("Graphviz `dot` is not installed")
    return dot


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(root, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_mermaid_is_a_flowchart_with_every_gear_and_wire(fluxmix_home: Path, mixed: Path) -> None:
    code, out, err = run("scenario", "graph", str(mixed), "--format", "mermaid")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "flowchart LR"
    node = re.compile(r'^    (g\d+)\["([^"]*)"\]$')
    edge = re.compile(r'^    (g\d+) (-->|-\.->)\|"([^"]*)"\| (g\d+)$')
    nodes = {m.group(1): m.group(2) for m in map(node.match, lines[1:]) if m}
    edges = [m.groups() for m in map(edge.match, lines[1:]) if m]
    assert len(nodes) + len(edges) == len(lines) - 1, "every line is a node or an edge"
    assert sorted(label.split("<br/>")[0] for label in nodes.values()) == ["bin", "keep", "sink", "source"]
    by_label = {label: (src, arrow, dst) for src, arrow, label, dst in edges}
    assert by_label["out → in (memory)"][1] == "-.->"  # memory dashed
    assert by_label["out → in (standard)"][1] == "-->"  # standard solid
    assert "rejected → in (memory)" in by_label
    assert all(src in nodes and dst in nodes for src, _, dst in by_label.values())


def test_dot_renders_with_graphviz(fluxmix_home: Path, mixed: Path, tmp_path: Path) -> None:
    dot = needs_dot()
    code, out, err = run("scenario", "graph", str(mixed), "--format", "dot")
    assert code == 0, err
    assert 'style=dashed' in out and 'style=solid' in out
    # Graphviz parses it and lays it out: the plain format lists every node and edge it drew.
    done = subprocess.run([dot, "-Tplain"], input=out, capture_output=True, text=True, timeout=60, check=True)
    drawn = {line.split()[1].strip('"') for line in done.stdout.splitlines() if line.startswith("node ")}
    assert drawn == {"source", "keep", "sink", "bin"}
    assert sum(line.startswith("edge ") for line in done.stdout.splitlines()) == 3


def test_svg_from_a_stored_ref(fluxmix_home: Path) -> None:
    needs_dot()
    assert run("scenario", "import", str(PAYMENTS))[0] == 0
    code, out, err = run("scenario", "graph", "payments:latest", "--format", "svg")
    assert code == 0, err
    root = ET.fromstring(out.split("\n", 3)[-1] if out.startswith("<?xml") else out)
    assert root.tag.endswith("svg")
    titles = {t.text for t in root.iter("{http://www.w3.org/2000/svg}title")}
    assert {"payments", "price", "large", "by-currency", "eur-file"} <= titles


def test_svg_without_graphviz_is_one_line_exit_2(fluxmix_home: Path, mixed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph, "dot_executable", lambda: None)
    code, out, err = run("scenario", "graph", str(mixed), "--format", "svg")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "apt-get install graphviz" in err


def test_invalid_scenario_is_refused_before_drawing(fluxmix_home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MIXED.replace("to: sink.in", "to: snk.in"))
    code, out, err = run("scenario", "graph", str(bad))
    assert code == 2 and out == ""
    assert "did you mean 'sink'" in err and "Traceback" not in err


def test_names_are_escaped_in_dot_and_mermaid() -> None:
    scenario = parse_scenario(MIXED.encode(), "mixed.yaml", catalog=Catalog.default())
    assert '"keep" -> "sink"' in graph.to_dot(scenario)
    weird = graph._mermaid_text('a "b" <c>')
    assert '"' not in weird and "<" not in weird


def test_layout_puts_every_gear_after_its_feeders() -> None:
    scenario = parse_scenario(PAYMENTS.read_bytes(), str(PAYMENTS), catalog=Catalog.default())
    layout = graph.layout(scenario)
    column = {n["name"]: n["column"] for n in layout["nodes"]}
    assert all(column[e["to"]] > column[e["from"]] for e in layout["edges"])
    assert layout["columns"] == max(column.values()) + 1
