"""Imports in the mixer, the status model and the CLI point one way: no module imports itself back.

Every import counts, including those inside functions and under `if TYPE_CHECKING:`, because
those are how a cycle hides (the mixer had daemon -> http -> metrics -> daemon that way)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"fluxmix": ROOT / "fluxmix", "fluxmix.store": ROOT / "store", "cli": ROOT / "cli"}
CHECKED = ("fluxmix.mixer", "fluxmix.status", "cli", "fluxmix.validation", "fluxmix.checks")  # validation <-> checks hid one too


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, directory in PACKAGES.items():
        for path in directory.rglob("*.py"):
            parts = [p for p in path.relative_to(directory).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {t for t in targets if t in known and t != name}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles, each as the modules on it (graphlib names one at a time; its last import is
    then set aside to look for the next)."""
    remaining = {module: set(imports) for module, imports in graph.items()}
    found: list[list[str]] = []
    while True:
        try:
            TopologicalSorter(remaining).prepare()
        except CycleError as error:
            cycle = error.args[1]  # [a, b, ..., a]: each imported by the next
            found.append(sorted(set(cycle)))
            remaining[cycle[1]].discard(cycle[0])
        else:
            return found


def test_the_finder_sees_a_cycle_hidden_in_a_function() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert len(cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}})) == 2
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_mixer_status_model_and_cli_have_no_import_cycle() -> None:
    graph = import_graph()
    assert "fluxmix.mixer.daemon" in graph and "fluxmix.status" in graph
    ours = [c for c in cycles(graph) if any(m.startswith(CHECKED) for m in c)]
    assert ours == []


def test_the_status_model_is_a_leaf_and_the_api_never_imports_the_daemon() -> None:
    graph = import_graph()
    assert graph["fluxmix.status"] == set()
    for module in ("http", "http_base", "http_state", "control", "page", "events", "metrics", "service"):
        assert "fluxmix.mixer.daemon" not in graph[f"fluxmix.mixer.{module}"], module
