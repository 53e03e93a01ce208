"""Data generators for the causal tests (linear-Gaussian SCMs with known answers)."""

from __future__ import annotations

import networkx as nx
import numpy as np

#: The 5-node DAG of the data test: a -> c <- b, c -> d -> e, a -> e.
FIVE_NODE_EDGES = [("a", "c"), ("b", "c"), ("c", "d"), ("d", "e"), ("a", "e")]
FIVE_NODE_WEIGHTS = {
    ("a", "c"): 0.8,
    ("b", "c"): 0.7,
    ("c", "d"): 0.9,
    ("d", "e"): 0.7,
    ("a", "e"): 0.6,
}


def linear_gaussian(names, weights, n, seed, noise_std=1.0):
    """Samples of a linear-Gaussian SCM ``x_v = sum_w w * x_parent + N(0, noise_std^2)``."""
    rng = np.random.default_rng(seed)
    dag = nx.DiGraph(list(weights))
    dag.add_nodes_from(names)
    cols = {}
    for v in nx.topological_sort(dag):
        cols[v] = noise_std * rng.normal(size=n)
        for u in dag.predecessors(v):
            cols[v] = cols[v] + weights[(u, v)] * cols[u]
    return np.column_stack([cols[v] for v in names])
