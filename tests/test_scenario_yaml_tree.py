"""load_yaml's alias-free fast path: a document without aliases is counted while composed
instead of walked again, and still refused past MAX_EXPANDED_NODES."""

from __future__ import annotations

import pytest

from fluxmix.errors import ScenarioError
from fluxmix.scenario_yaml import MAX_DOCUMENT_BYTES, MAX_EXPANDED_NODES, load_yaml


def test_a_large_tree_without_aliases_is_refused_by_its_node_count() -> None:
    items = MAX_EXPANDED_NODES + 10
    data = ("x: [" + ",".join("1" for _ in range(items)) + "]\n").encode()
    assert len(data) <= MAX_DOCUMENT_BYTES
    with pytest.raises(ScenarioError, match="expands to more than"):
        load_yaml(data, "big.yaml")


def test_aliases_are_still_walked_and_a_tree_just_under_the_bound_loads() -> None:
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6)
    )
    with pytest.raises(ScenarioError, match="expands to more than"):
        load_yaml(bomb, "bomb.yaml")
    items = MAX_EXPANDED_NODES - 10  # root mapping, key, sequence and its items: within the bound
    loaded = load_yaml("x: [" + ",".join("1" for _ in range(items)) + "]\n", "ok.yaml")
    assert len(loaded["x"]) == items
