"""The nodes and the edges between them: producers, consumers, cycles, order."""

from __future__ import annotations

from collections import defaultdict
from heapq import heapify, heappop, heappush

from orchestrator.errors import FlowInvalid
from orchestrator.models import Flow, Node
from orchestrator.validation.results import ValidationEntry, duplicated_ids, node_label


def topological_order(flow: Flow) -> list[str]:
    """Node IDs so that every producer comes before its consumers.

    Among nodes that could go next, the one declared first goes first, so the
    order is stable. Raises FlowInvalid (``FLOW_001``) if the nodes form a cycle.
    """
    graph = Graph(flow.nodes)
    order = graph.order()
    if len(order) < len(flow.nodes):
        raise FlowInvalid([entry.model_dump() for entry in graph.cycle_entries()])
    return [flow.nodes[i].id for i in order]


class Graph:
    """Nodes (by position, so duplicate IDs cannot hide a cycle) and the edges between them."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.duplicated = duplicated_ids(nodes)
        producers: dict[str, list[int]] = defaultdict(list)
        for i, node in enumerate(nodes):
            for binding in node.outputs:
                producers[binding.edge].append(i)
        self.succ: list[list[int]] = [[] for _ in nodes]
        self.pred: list[list[int]] = [[] for _ in nodes]
        self.label: dict[tuple[int, int], str] = {}
        for j, node in enumerate(nodes):
            for binding in node.inputs:
                for i in producers.get(binding.edge, []):
                    if (i, j) not in self.label:
                        self.label[(i, j)] = binding.edge
                        self.succ[i].append(j)
                        self.pred[j].append(i)

    def order(self) -> list[int]:
        """Node positions, every producer before its consumers (the one declared first
        when several could go next); nodes a cycle holds back are left out."""
        indegree = [len(p) for p in self.pred]
        ready = [i for i, degree in enumerate(indegree) if degree == 0]
        heapify(ready)
        order: list[int] = []
        while ready:
            current = heappop(ready)
            order.append(current)
            for successor in self.succ[current]:
                indegree[successor] -= 1
                if indegree[successor] == 0:
                    heappush(ready, successor)
        return order

    def name(self, index: int) -> str:
        return node_label(self.nodes[index], index, self.nodes[index].id in self.duplicated)

    def _components(self) -> list[list[int]]:
        """Strongly connected components (Kosaraju, iterative)."""
        n = len(self.nodes)
        seen = [False] * n
        finished: list[int] = []
        for start in range(n):
            if seen[start]:
                continue
            seen[start] = True
            stack = [(start, iter(self.succ[start]))]
            while stack:
                vertex, successors = stack[-1]
                for nxt in successors:
                    if not seen[nxt]:
                        seen[nxt] = True
                        stack.append((nxt, iter(self.succ[nxt])))
                        break
                else:
                    stack.pop()
                    finished.append(vertex)
        component = [-1] * n
        components: list[list[int]] = []
        for start in reversed(finished):
            if component[start] != -1:
                continue
            members = []
            component[start] = len(components)
            todo = [start]
            while todo:
                vertex = todo.pop()
                members.append(vertex)
                for prev in self.pred[vertex]:
                    if component[prev] == -1:
                        component[prev] = len(components)
                        todo.append(prev)
            components.append(sorted(members))
        return sorted(components)

    def _cycle_through(self, start: int, members: set[int]) -> list[int]:
        """A shortest cycle from ``start`` back to it, inside one component."""
        parent: dict[int, int] = {}
        frontier = [start]
        while frontier:
            following: list[int] = []
            for vertex in frontier:
                for nxt in self.succ[vertex]:
                    if nxt == start:
                        path = [vertex]
                        while path[-1] != start:
                            path.append(parent[path[-1]])
                        return [*reversed(path), start]
                    if nxt in members and nxt not in parent:
                        parent[nxt] = vertex
                        following.append(nxt)
            frontier = following
        return [start, start]  # unreachable for a cyclic component

    def cycle_entries(self) -> list[ValidationEntry]:
        entries = []
        for members in self._components():
            start = members[0]
            if len(members) == 1 and (start, start) not in self.label:
                continue
            cycle = self._cycle_through(start, set(members))
            text = self.name(cycle[0])
            for prev, nxt in zip(cycle, cycle[1:], strict=False):
                text += f" -[{self.label[(prev, nxt)]}]-> {self.name(nxt)}"
            others = ""
            if len(members) > len(cycle) - 1:
                rest = [self.name(i) for i in members if i not in cycle]
                others = f" (also caught in it: {', '.join(rest)})"
            entries.append(
                ValidationEntry(
                    code="FLOW_001",
                    message=(
                        f"nodes form a cycle: {text}{others}; a flow must be a DAG: "
                        "remove or rename one of these edges"
                    ),
                    node=self.nodes[start].id or None,
                    field=f"Flow.Nodes.{start}",
                )
            )
        return entries


__all__ = [
    "Graph",
    "topological_order",
]
