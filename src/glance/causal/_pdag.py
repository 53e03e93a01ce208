"""Partially directed graphs: Meek's orientation rules, CPDAG of a DAG, knowledge, extensions.

These are the textbook closure rules (Meek 1995, "Causal inference and causal explanation with
background knowledge"), not a search: they only propagate orientations that every DAG in the
equivalence class (restricted by the knowledge) shares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import networkx as nx

__all__ = ["PDAG", "cpdag_from_dag"]


class PDAG:
    """A partially directed graph over nodes ``0..n-1`` (directed and undirected edges)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.und: list[set[int]] = [set() for _ in range(n)]
        self.out: list[set[int]] = [set() for _ in range(n)]
        self.inc: list[set[int]] = [set() for _ in range(n)]

    @classmethod
    def from_edges(
        cls,
        n: int,
        directed: Iterable[tuple[int, int]] = (),
        undirected: Iterable[tuple[int, int]] = (),
    ) -> PDAG:
        g = cls(n)
        for a, b in undirected:
            g.add_undirected(a, b)
        for a, b in directed:
            g.add_directed(a, b)
        return g

    def copy(self) -> PDAG:
        g = PDAG(self.n)
        g.und = [set(s) for s in self.und]
        g.out = [set(s) for s in self.out]
        g.inc = [set(s) for s in self.inc]
        return g

    # -- edits
    def remove(self, a: int, b: int) -> None:
        for x, y in ((a, b), (b, a)):
            self.und[x].discard(y)
            self.out[x].discard(y)
            self.inc[x].discard(y)

    def add_undirected(self, a: int, b: int) -> None:
        self.remove(a, b)
        self.und[a].add(b)
        self.und[b].add(a)

    def add_directed(self, a: int, b: int) -> None:
        self.remove(a, b)
        self.out[a].add(b)
        self.inc[b].add(a)

    # -- queries
    def adjacent(self, a: int, b: int) -> bool:
        return b in self.und[a] or b in self.out[a] or b in self.inc[a]

    def neighbours(self, a: int) -> set[int]:
        return self.und[a] | self.out[a] | self.inc[a]

    def undirected_edges(self) -> list[tuple[int, int]]:
        return sorted((a, b) for a in range(self.n) for b in self.und[a] if a < b)

    def directed_edges(self) -> list[tuple[int, int]]:
        return sorted((a, b) for a in range(self.n) for b in self.out[a])

    def reaches(self, a: int, b: int) -> bool:
        """Whether a directed path leads from ``a`` to ``b``."""
        stack, seen = [a], {a}
        while stack:
            x = stack.pop()
            if x == b:
                return True
            for y in self.out[x]:
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        return False

    def can_orient(self, a: int, b: int) -> bool:
        """``a -> b`` keeps the directed part acyclic."""
        return not self.reaches(b, a)

    def is_acyclic(self) -> bool:
        g = nx.DiGraph()
        g.add_nodes_from(range(self.n))
        g.add_edges_from(self.directed_edges())
        return nx.is_directed_acyclic_graph(g)

    # -- Meek rules
    def meek(self, allowed: Callable[[int, int], bool] | None = None) -> PDAG:
        """Apply Meek's rules R1-R4 in place until nothing changes; returns ``self``.

        ``allowed(a, b)`` may veto an orientation ``a -> b`` (background knowledge); an
        orientation that would close a directed cycle is never made (only possible when the
        input was not a valid PDAG, e.g. conflicting v-structures from finite-sample tests).
        """
        changed = True
        while changed:
            changed = False
            for a, b in self.undirected_edges():
                for x, y in ((a, b), (b, a)):
                    if (
                        self._meek_implies(x, y)
                        and self.can_orient(x, y)
                        and (allowed is None or allowed(x, y))
                    ):
                        self.add_directed(x, y)
                        changed = True
                        break
        return self

    def _meek_implies(self, a: int, b: int) -> bool:
        """Whether one of R1-R4 orients the undirected edge ``a -- b`` as ``a -> b``."""
        # R1: c -> a -- b, c and b not adjacent
        if any(not self.adjacent(c, b) for c in self.inc[a]):
            return True
        # R2: a -> c -> b
        if self.out[a] & self.inc[b]:
            return True
        und_a = self.und[a]
        # R3: a -- c -> b, a -- d -> b, c and d not adjacent
        cands = [c for c in und_a if c in self.inc[b]]
        for i, c in enumerate(cands):
            for d in cands[i + 1 :]:
                if not self.adjacent(c, d):
                    return True
        # R4: a -- c -> d -> b with c, b not adjacent and a, d adjacent
        for c in und_a:
            if c == b or self.adjacent(c, b):
                continue
            for d in self.out[c]:
                if d in self.inc[b] and self.adjacent(a, d):
                    return True
        return False


def cpdag_from_dag(n: int, edges: Sequence[tuple[int, int]]) -> PDAG:
    """The CPDAG (essential graph) of a DAG: skeleton + v-structures + Meek closure.

    Raises ``ValueError`` if ``edges`` has a directed cycle.
    """
    dag = nx.DiGraph()
    dag.add_nodes_from(range(n))
    dag.add_edges_from(edges)
    if not nx.is_directed_acyclic_graph(dag):
        raise ValueError("the true graph has a directed cycle; it must be a DAG")
    g = PDAG.from_edges(n, undirected=edges)
    compelled: set[tuple[int, int]] = set()
    for c in range(n):
        parents = sorted(dag.predecessors(c))
        for i, a in enumerate(parents):
            for b in parents[i + 1 :]:
                if not dag.has_edge(a, b) and not dag.has_edge(b, a):
                    compelled.update({(a, c), (b, c)})
    for a, c in compelled:
        g.add_directed(a, c)
    return g.meek()
