"""The causal graph coloured by one image's importances, and its PNGs in ``glance explain``."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from toy_run import serve_toy_run

from glance.causal import CausalGraph
from glance.cli.main import main
from glance.explain import InterventionalImportance, toy
from glance.explain._graph_plot import plot_graph_importance, save_graph_importance_png

_NAMES = ["size", "brightness", "concept_0", "output_0", "output_1"]


def _graph(names=_NAMES):
    directed = [("size", "brightness"), ("size", "output_1"), ("size", "output_0")]
    keep = [(a, b) for a, b in directed if a in names and b in names]
    und = [("brightness", "concept_0")] if {"brightness", "concept_0"} <= set(names) else []
    return CausalGraph.from_edges(names, keep, und)


@pytest.fixture(scope="module")
def exp(size_twin, toy_images):
    return InterventionalImportance(size_twin, keep_images=False).explain(toy_images[:3])


def test_returns_figure_with_colour_bar_and_saves_png(exp, tmp_path):
    fig = plot_graph_importance(_graph(), exp, 0)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 2  # the graph and its colour bar
    assert "importance" in fig.axes[1].get_ylabel()
    path = tmp_path / "g.png"
    save_graph_importance_png(_graph(), exp, 0, path)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert path.stat().st_size > 1000


def test_node_colours_follow_the_importances(exp):
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    fig = plot_graph_importance(_graph(), exp, 1)
    ax = fig.axes[0]
    fills = [c.get_facecolor()[0] for c in ax.collections if len(c.get_offsets()) == 1]
    imp = exp.importance[1]
    cmap, norm = colormaps["Greens"], Normalize(0.0, imp.max())
    for j in range(3):  # the three explained nodes, drawn first in graph order
        np.testing.assert_allclose(fills[j], cmap(norm(imp[j])), atol=1e-6)
    assert exp.ranking(1)[0] == "size"


def test_missing_nodes_both_ways(exp, tmp_path):
    # Graph lacks concept_0 (e.g. dropped in discovery) and has an extra unexplained node.
    g = CausalGraph.from_edges(
        ["size", "brightness", "concept_7", "output_1"],
        [("size", "brightness"), ("brightness", "output_1")],
        [("size", "concept_7")],
    )
    fig = plot_graph_importance(g, exp, 2)
    assert "not in the graph" in fig.axes[0].texts[-1].get_text()
    save_graph_importance_png(g, exp, 2, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0


def test_draws_on_given_axes_and_rejects_bad_index(exp):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot(1, 2, 1)
    assert plot_graph_importance(_graph(), exp, -1, ax=ax) is fig
    with pytest.raises(IndexError):
        plot_graph_importance(_graph(), exp, 3)


def _png(path, z):
    img = (toy.render(torch.tensor([z]))[0, 0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


@pytest.mark.parametrize("graph", [_graph(), None])
def test_cli_writes_graph_pngs_when_the_run_has_a_graph(monkeypatch, tmp_path, graph):
    serve_toy_run(monkeypatch, tmp_path / "run", classes=("0", "1"), graph_=graph)
    a = _png(tmp_path / "a.png", [1.0, 0.0, 0.0])
    b = _png(tmp_path / "b.png", [-1.0, 0.5, 0.0])
    out = tmp_path / "out"
    assert main(["-q", "explain", str(tmp_path / "run"), str(a), str(b), "--out", str(out)]) == 0
    assert (out / "summary_1.png").exists()
    written = sorted(p.name for p in out.glob("graph_*.png"))
    assert written == (["graph_0.png", "graph_1.png"] if graph is not None else [])
    out2 = tmp_path / "out2"
    argv = ["-q", "explain", str(tmp_path / "run"), str(a), "--no-pngs", "--out", str(out2)]
    assert main(argv) == 0
    assert not list(out2.glob("*.png"))
