from __future__ import annotations

import json
import math

import networkx as nx
import numpy as np
import pytest

from glance.causal import CausalGraph, Edge, Endpoint, Node
from glance.exceptions import DataValidationError


def _graph():
    nodes = [
        Node("thickness", "context"),
        Node("intensity", "context"),
        Node("concept_0", "concept"),
        Node("output_3", "output"),
    ]
    edges = [
        Edge("thickness", "intensity", False, 0.95, 0.1, 0.9),
        Edge("thickness", "output_3", True, 1.0, 0.85, -0.4),
        Edge("concept_0", "output_3", True, 0.6, 0.6, float("nan")),
    ]
    return CausalGraph(nodes, edges, {"algorithm": "pc", "elapsed_s": 1.5})


def test_queries():
    g = _graph()
    assert g.parents("output_3") == ["thickness", "concept_0"]
    assert g.children("thickness") == ["output_3"]
    assert g.neighbours("intensity") == ["thickness"]
    assert g.descendants("thickness") == ["output_3"]
    assert g.kind("output_3") == "output"
    assert not g.is_dag()
    with pytest.raises(DataValidationError, match="unknown node 'thick'"):
        g.parents("thick")


def test_adjacency_encoding():
    g = _graph()
    m = g.adjacency()
    t, i, c, o = (g.index(n) for n in ("thickness", "intensity", "concept_0", "output_3"))
    assert m[t, i] == m[i, t] == Endpoint.TAIL  # undirected
    assert m[t, o] == Endpoint.ARROW and m[o, t] == Endpoint.TAIL  # thickness -> output
    assert m[i, c] == m[c, i] == Endpoint.NONE
    back = CausalGraph.from_adjacency(m, g.names, g.kinds)
    assert {(e.source, e.target, e.directed) for e in back.edges()} == {
        (e.source, e.target, e.directed) for e in g.edges()
    }


@pytest.mark.parametrize(
    "nodes, edges, match",
    [
        ([Node("a"), Node("a")], [], "duplicate node"),
        ([Node("a", "latent")], [], "kind 'latent'"),
        ([Node("a")], [Edge("a", "a", True)], "self-loop"),
        ([Node("a")], [Edge("a", "b", True)], "unknown node 'b'"),
        ([Node("a"), Node("b")], [Edge("a", "b", True), Edge("b", "a", False)], "more than one"),
    ],
)
def test_invalid_graphs_are_rejected(nodes, edges, match):
    with pytest.raises(DataValidationError, match=match):
        CausalGraph(nodes, edges)


def test_json_contract_and_round_trip(tmp_path):
    g = _graph()
    d = g.to_dict()
    assert set(d) == {"nodes", "edges", "meta"}
    assert d["nodes"][3] == {"name": "output_3", "kind": "output"}
    assert set(d["edges"][0]) == {
        "source",
        "target",
        "directed",
        "confidence",
        "orientation_confidence",
        "effect",
    }
    assert "elapsed_s" not in d["meta"]  # volatile: keeps same-seed JSON byte-identical
    assert "elapsed_s" in g.to_dict(include_volatile=True)["meta"]
    g.save_json(tmp_path / "graph.json")
    raw = json.loads((tmp_path / "graph.json").read_text())
    assert raw["edges"][-1]["effect"] is None  # NaN -> null
    back = CausalGraph.load_json(tmp_path / "graph.json")
    assert back == g
    assert math.isnan(back.edge("concept_0", "output_3").effect)


def test_from_dict_rejects_malformed():
    with pytest.raises(DataValidationError, match="'nodes' and 'edges'"):
        CausalGraph.from_dict({"nodes": []})
    with pytest.raises(DataValidationError, match="malformed"):
        CausalGraph.from_dict({"nodes": [{"name": "a"}], "edges": [{"source": "a"}]})


def test_networkx_graphml_and_dot(tmp_path):
    g = _graph()
    nxg = g.to_networkx()
    assert nxg.nodes["output_3"]["kind"] == "output"
    assert nxg.edges["thickness", "intensity"]["directed"] is False
    text = g.to_graphml(tmp_path / "graph.graphml")
    parsed = nx.read_graphml(tmp_path / "graph.graphml")
    assert text.startswith("<?xml") or "<graphml" in text
    assert parsed.edges["thickness", "output_3"]["confidence"] == pytest.approx(1.0)
    assert parsed.edges["concept_0", "output_3"]["has_effect"] is False
    dot = g.to_dot(tmp_path / "graph.dot")
    assert '"thickness" -> "intensity"' in dot and "dir=none" in dot
    assert '"output_3" [kind="output", shape=box' in dot
    assert (tmp_path / "graph.dot").read_text() == dot


def test_png_is_written(tmp_path):
    _graph().save_png(tmp_path / "graph.png", dpi=40)
    data = (tmp_path / "graph.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_subgraph_and_from_edges_infers_kinds():
    g = CausalGraph.from_edges(
        ["size", "concept_1", "output_cat"], [("size", "output_cat")], [("size", "concept_1")]
    )
    assert g.kinds == ["context", "concept", "output"]
    sub = g.subgraph(["size", "concept_1"])
    assert sub.names == ["size", "concept_1"] and len(sub.edges()) == 1
    assert np.all(sub.adjacency() == sub.adjacency().T)  # the kept edge is undirected
