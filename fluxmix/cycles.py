"""Directed cycles in a graph of named nodes whose edges carry an index (a wire's place in the file).

Validation refuses cycles between gears; this module only finds them, in time linear in the
graph, however many cycles there are.
"""

from __future__ import annotations

Graph = dict[str, list[tuple[str, int]]]  # node -> [(successor, edge index)]


def strongly_connected(graph: Graph) -> list[list[str]]:
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


def cycle_through(graph: Graph, members: set[str], origin: str, first: str, edge: int) -> tuple[list[str], list[int]]:
    """A concrete cycle that uses edge `edge` (origin -> first): BFS from `first` back to `origin` inside `members`.

    Returns the nodes along the cycle (origin first and last) and the edge indexes it takes.
    """
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
        return [origin, origin], [edge]
    path.append(origin)
    path.reverse()
    indexes.reverse()
    return path, [edge, *indexes]
