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


SHAPES_TRUTH = {
    "factors": ["shape", "size", "pos_y", "hue", "brightness"],
    "nodes": ["shape", "size", "pos_y", "hue", "brightness", "label"],
    "edges": [
        {"source": "shape", "target": "hue"},
        {"source": "pos_y", "target": "brightness"},
        {"source": "size", "target": "label"},
    ],
    "label_rule": {"factors": ["size"]},
}


def test_truth_scores_against_a_truth_json():
    from glance.metrics.graph import truth_scores

    est = CausalGraph.from_edges(
        [
            "shape",
            "size",
            "pos_y",
            "hue",
            "brightness",
            "concept_0",
            "output_small",
            "output_large",
        ],
        directed=[("size", "output_large"), ("size", "output_small"), ("hue", "output_small")],
        undirected=[("shape", "hue"), ("pos_y", "brightness")],
    )
    s = truth_scores(est, SHAPES_TRUTH)
    assert s["shd"] == 0 and s["f1"] == 1.0 and s["n_true_edges"] == 2
    assert s["outputs"]["output_large"] == {
        "rule_factors": ["size"],
        "found": ["size"],
        "recall": 1.0,
        "other_factor_parents": [],
    }
    assert s["outputs"]["output_small"]["other_factor_parents"] == ["hue"]
    # a run that models only some factors: shape is left out, so hue has no modelled cause
    partial = est.subgraph(["size", "pos_y", "hue", "brightness", "output_large"])
    s = truth_scores(partial, SHAPES_TRUTH)
    assert s["nodes"] == ["size", "pos_y", "hue", "brightness"]
    assert s["shd"] == 0 and s["n_true_edges"] == 1
    # an extra hue - size edge is one error
    extra = partial.with_edges(
        [*partial.edges(), *CausalGraph.from_edges(["size", "hue"], [], [("size", "hue")]).edges()]
    )
    assert truth_scores(extra, SHAPES_TRUTH)["shd"] == 1


def test_truth_projection_through_omitted_factors():
    from glance.metrics.graph import truth_scores

    truth = {
        "nodes": ["a", "m", "b", "w", "c", "d"],
        "edges": [["a", "m"], ["m", "b"], ["w", "c"], ["w", "d"]],
    }
    est = CausalGraph.from_edges(["a", "b", "c", "d"], [], [("a", "b"), ("c", "d")])
    s = truth_scores(est, truth)
    # a -> m -> b with m unmodelled is the edge a - b; c <- w -> d is confounding: not scored
    assert s["n_true_edges"] == 1 and s["shd"] == 0
    assert s["excluded_confounded_pairs"] == [["c", "d"]]
