from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from glance.causal import BackgroundKnowledge, CausalGraph
from glance.exceptions import DataValidationError
from glance.metrics.graph import (
    edge_precision_recall_f1,
    graph_scores,
    orientation_accuracy,
    structural_hamming_distance,
    true_cpdag,
)


def _marks(g):
    return {
        (e.source, e.target, e.directed) if e.directed else (*sorted((e.source, e.target)), False)
        for e in g.edges()
    }


def test_cpdag_of_textbook_dags():
    # chain: nothing identifiable
    assert _marks(true_cpdag([("a", "b"), ("b", "c")])) == {("a", "b", False), ("b", "c", False)}
    # collider plus a descendant: v-structure, then Meek R1 orients c -> d
    cp = true_cpdag([("a", "c"), ("b", "c"), ("c", "d")])
    assert _marks(cp) == {("a", "c", True), ("b", "c", True), ("c", "d", True)}
    # shielded collider (triangle): no v-structure, all undirected
    cp = true_cpdag([("a", "b"), ("a", "c"), ("b", "c")])
    assert all(not e.directed for e in cp.edges())


def _cl_cpdag_marks(n, edges):
    from causallearn.graph.Dag import Dag
    from causallearn.graph.GraphNode import GraphNode
    from causallearn.utils.DAG2CPDAG import dag2cpdag

    nodes = [GraphNode(f"X{i}") for i in range(n)]
    dag = Dag(nodes)
    for a, b in edges:
        dag.add_directed_edge(nodes[a], nodes[b])
    m = dag2cpdag(dag).graph
    out = set()
    for i in range(n):
        for j in range(i + 1, n):
            if m[i, j] == -1 and m[j, i] == 1:
                out.add((f"X{i}", f"X{j}", True))
            elif m[i, j] == 1 and m[j, i] == -1:
                out.add((f"X{j}", f"X{i}", True))
            elif m[i, j] == -1 and m[j, i] == -1:
                out.add((f"X{i}", f"X{j}", False))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_cpdag_agrees_with_causal_learn_on_random_dags(seed):
    rng = np.random.default_rng(seed)
    n = 8
    edges = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.35]
    names = [f"X{i}" for i in range(n)]
    ours = true_cpdag([(names[a], names[b]) for a, b in edges], names=names)
    assert _marks(ours) == _cl_cpdag_marks(n, edges)


def test_scores_by_hand():
    truth = nx.DiGraph([("a", "c"), ("b", "c"), ("c", "d")])  # CPDAG: a->c<-b, c->d
    est = CausalGraph.from_edges(
        list("abcd"), directed=[("a", "c"), ("d", "c")], undirected=[("b", "c"), ("a", "d")]
    )
    # a-c right; b-c undirected (wrong mark); c-d reversed; a-d extra -> SHD 3
    assert structural_hamming_distance(est, truth) == 3
    prf = edge_precision_recall_f1(est, truth)
    assert prf["precision"] == pytest.approx(3 / 4) and prf["recall"] == pytest.approx(1.0)
    assert prf["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert orientation_accuracy(est, truth) == pytest.approx(1 / 3)
    assert graph_scores(est, truth, nodes=["a", "b", "c"])["shd"] == 1
    exact = CausalGraph.from_edges(list("abcd"), [("a", "c"), ("b", "c"), ("c", "d")])
    assert graph_scores(exact, truth) == {
        "shd": 0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "orientation_accuracy": 1.0,
    }


def test_knowledge_orients_the_target():
    truth = [("thickness", "intensity")]
    undirected = CausalGraph.from_edges(
        ["thickness", "intensity"], [], [("thickness", "intensity")]
    )
    assert structural_hamming_distance(undirected, truth) == 0
    bk = BackgroundKnowledge().order("thickness", "intensity")
    assert structural_hamming_distance(undirected, truth, knowledge=bk) == 1


def test_empty_graphs_and_errors():
    empty = CausalGraph.from_edges(["a", "b"])
    s = graph_scores(empty, [("a", "b")])
    assert s["shd"] == 1 and math.isnan(s["precision"]) and s["recall"] == 0.0
    assert math.isnan(s["orientation_accuracy"])
    with pytest.raises(DataValidationError, match="lacks node"):
        structural_hamming_distance(empty, [("a", "z")])
    with pytest.raises(DataValidationError, match="cycle"):
        true_cpdag([("a", "b"), ("b", "a")])
