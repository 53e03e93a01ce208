"""The readable graph and its sentence."""

from __future__ import annotations

from glance.causal import CausalGraph, graph_story, readable_graph
from glance.causal.graph import Edge, Node
from glance.causal.story import OUTPUTS_NODE


def _graph(n_outputs: int = 10) -> CausalGraph:
    """The demo's shape: 2 contexts, 8 concepts, many outputs, dense concept-concept edges."""
    contexts = ["thickness", "intensity"]
    concepts = [f"concept_{i}" for i in range(8)]
    outputs = [f"output_{k}" for k in range(n_outputs)]
    nodes = (
        [Node(n, "context") for n in contexts]
        + [Node(n, "concept") for n in concepts]
        + [Node(n, "output") for n in outputs]
    )
    edges = [
        Edge("thickness", "intensity", False, 1.0, 0.5, 0.9),
        Edge("thickness", "concept_6", True, 1.0, 1.0, -0.4),
    ]
    for i in range(8):  # a tangle among the concepts
        for j in range(i + 1, 8):
            edges.append(Edge(concepts[i], concepts[j], True, 0.9, 1.0, 0.05 * (i + j)))
    for k, out in enumerate(outputs):  # every output has 4-5 concept parents
        for i in range(2, 7 + (k % 2)):
            edges.append(Edge(concepts[i], out, True, 1.0, 1.0, (-1) ** (i + k) * 0.1 * i))
    return CausalGraph(nodes, edges)


def test_a_tangle_becomes_the_outputs_neighbourhood_in_at_most_15_edges():
    full = _graph()
    assert len(full.edges()) > 60
    small = readable_graph(full, max_edges=15)
    assert len(small.edges()) <= 15
    assert OUTPUTS_NODE in small.names and small.meta["readable"]["outputs_grouped"]
    parents = {p for o in full.names if o.startswith("output_") for p in full.parents(o)}
    assert parents <= set(small.parents(OUTPUTS_NODE))  # every output's parents stay in it
    assert {"thickness", "intensity"} <= set(small.names)  # contexts are always shown
    assert small.kind(OUTPUTS_NODE) == "output"


def test_few_outputs_are_drawn_one_by_one():
    small = readable_graph(_graph(n_outputs=2))
    assert {"output_0", "output_1"} <= set(small.names) and OUTPUTS_NODE not in small.names
    assert set(small.parents("output_1")) == set(_graph(2).parents("output_1"))


def test_the_story_says_what_the_prediction_depends_on():
    text = graph_story(_graph())
    assert text.startswith("The prediction depends directly on concept_")
    assert "Thickness affects it only through concept_6;" in text
    assert "intensity does not affect it" in text
    direct = CausalGraph(
        [Node("thickness"), Node("intensity"), Node("concept_0", "concept"), Node("y", "output")],
        [
            Edge("thickness", "y", True, 1.0, 1.0, 0.8),
            Edge("concept_0", "y", True, 1.0, 1.0, 0.3),
            Edge("thickness", "intensity", True, 1.0, 1.0, 0.5),
        ],
    )
    story = graph_story(direct)
    assert story.startswith("The output y depends directly on thickness and concept_0")
    assert story.endswith("Intensity does not affect it.")


def test_unoriented_and_empty_cases():
    g = CausalGraph(
        [Node("a"), Node("y", "output")], [Edge("a", "y", False, 1.0, 0.5, 0.2)]
    )
    assert "could not orient" in graph_story(g)
    assert "no output node" in graph_story(CausalGraph([Node("a")], []))
    assert "depends on no node" in graph_story(CausalGraph([Node("a"), Node("y", "output")], []))
