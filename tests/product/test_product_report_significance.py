"""The report's significance against random concepts and per-image graph pictures, and the demo
step that writes them (synthetic artefacts; no fit)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from product_helpers import make_fixture_run, png_bytes

from glance._io import write_manifest
from glance.report import render_report
from glance.run import Run

NODES = ["thickness", "intensity", "concept_0", "concept_1"]
# per image: p-values against 49 random concepts (alpha 0.05)
P_VALUES = [
    {"thickness": 0.02, "intensity": 0.3, "concept_0": 0.9, "concept_1": 0.05},
    {"thickness": 0.04, "intensity": 0.06, "concept_0": 1.0, "concept_1": 0.5},
    {"thickness": 0.02, "intensity": 0.02, "concept_0": 0.7, "concept_1": 0.12},
]
SUMMARY = {  # saved in alphabetical key order, as atomic_write_json writes it
    "concept_0": {"p_value": 0.25, "difference": -0.1, "direction": "below", "significant": False,
                  "fraction_significant": 0.0, "n_random": 49, "n_images": 3},
    "concept_1": {"p_value": 0.5, "difference": 0.01, "direction": "above", "significant": False,
                  "fraction_significant": 1 / 3, "n_random": 49, "n_images": 3},
    "intensity": {"p_value": 0.25, "difference": 0.05, "direction": "above", "significant": False,
                  "fraction_significant": 1 / 3, "n_random": 49, "n_images": 3},
    "thickness": {"p_value": 0.0123, "difference": 0.4, "direction": "above", "significant": True,
                  "fraction_significant": 1.0, "n_random": 49, "n_images": 3},
}  # fmt: skip


def _with_significance(run: Path, *, graph_pngs: bool = False) -> Path:
    """Add the keys ``LocalExplanation.to_dict`` writes with ``n_random > 0`` to a fixture run."""
    path = run / "explanations" / "explanations.json"
    data = json.loads(path.read_text())
    data.update(n_random=49, alpha=0.05, significance_summary=SUMMARY)
    for rec, p in zip(data["explanations"], P_VALUES, strict=True):
        rec["significance"] = p
        rec["significant"] = {n: v <= 0.05 for n, v in p.items()}
    path.write_text(json.dumps(data))
    if graph_pngs:
        for i in range(len(P_VALUES)):
            (run / "explanations" / f"graph_{i}.png").write_bytes(png_bytes(60, 90, 100 + i, 3))
    write_manifest(run)
    return run


def _rows(html: str, table: str) -> list[dict[str, str]]:
    """``data-node`` / ``data-significant`` and the cell texts of each row of ``table.<table>``."""
    out = []
    for body in re.findall(rf'<table class="{table}">(.*?)</table>', html, flags=re.S):
        for attrs, cells in re.findall(r"<tr ([^>]*data-node[^>]*)>(.*?)</tr>", body, flags=re.S):
            row = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', attrs))
            row["cells"] = [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)]
            out.append(row)
    return out


def test_per_image_significance_is_marked_next_to_the_importances(tmp_path: Path) -> None:
    run = _with_significance(make_fixture_run(tmp_path / "run"))
    html = render_report(run)
    rows = _rows(html, "significance")
    assert len(rows) == len(P_VALUES) * len(NODES)
    for i, p in enumerate(P_VALUES):
        image = rows[i * len(NODES) : (i + 1) * len(NODES)]
        # ordered like the importance chart: largest total importance first
        assert [r["data-node"] for r in image] == [
            "thickness",
            "concept_1",
            "intensity",
            "concept_0",
        ]
        for r in image:
            node = r["data-node"]
            assert r["data-significant"] == str(p[node] <= 0.05).lower()
            assert r["cells"][3] == f"{p[node]:.3g}"
            assert r["cells"][4] == ("✓" if p[node] <= 0.05 else "✗")
        assert image[0]["cells"][1] == f"{0.3 + i:.3g}"  # total importance of thickness
    assert html.count("not significant vs 49 random concepts (one-sided p ≤ 0.05)") == 3


def test_dataset_summary_table(tmp_path: Path) -> None:
    run = _with_significance(make_fixture_run(tmp_path / "run"))
    html = render_report(run)
    assert 'id="significance"' in html
    assert "compared with that of 49 random concepts" in html
    rows = _rows(html, "significance-summary")
    assert [r["data-node"] for r in rows] == NODES  # the explanation's node order
    by = {r["data-node"]: r for r in rows}
    assert by["thickness"]["data-significant"] == "true"
    assert by["thickness"]["cells"] == ["thickness", "0.0123", "0.4", "above", "100%", "✓ yes"]
    assert by["intensity"]["cells"][4] == "33%"
    assert by["concept_0"]["cells"][3:] == ["below", "0%", "✗ no"]


def test_verdict_falls_back_to_p_and_alpha(tmp_path: Path) -> None:
    run = _with_significance(make_fixture_run(tmp_path / "run"))
    path = run / "explanations" / "explanations.json"
    data = json.loads(path.read_text())
    for rec in data["explanations"]:
        del rec["significant"]
    del data["significance_summary"]
    data["alpha"] = 0.1
    path.write_text(json.dumps(data))
    write_manifest(run)
    html = render_report(run)
    rows = _rows(html, "significance")
    first = {r["data-node"]: r["data-significant"] for r in rows[: len(NODES)]}
    assert first == {"thickness": "true", "concept_1": "true", "intensity": "false",
                     "concept_0": "false"}  # fmt: skip
    assert '<table class="significance-summary"' not in html and 'id="significance"' in html


@pytest.mark.parametrize("n_random", [None, 0])
def test_runs_without_significance_render_as_before(tmp_path: Path, n_random: Any) -> None:
    run = make_fixture_run(tmp_path / "run")
    if n_random is not None:  # an explicit 0 (to_dict writes no key, but be lenient)
        path = run / "explanations" / "explanations.json"
        data = json.loads(path.read_text())
        data["n_random"] = n_random
        path.write_text(json.dumps(data))
        write_manifest(run)
    html = render_report(run)
    assert "random concepts" not in html
    assert 'id="significance"' not in html
    assert 'class="significance' not in html
    assert html.count('<article class="explanation"') == 3
    assert html.count('class="chart bar-chart"') >= 3  # importance charts still drawn


def test_graph_pictures_are_embedded_per_image(tmp_path: Path) -> None:
    run = _with_significance(make_fixture_run(tmp_path / "run"), graph_pngs=True)
    html = render_report(run)
    articles = re.findall(r'<article class="explanation".*?</article>', html, flags=re.S)
    assert len(articles) == 3
    for i, art in enumerate(articles):
        graphs = re.findall(r'<figure class="graph"><img src="([^"]+)" alt="graph">', art)
        assert len(graphs) == 1
        head, b64 = graphs[0].split(",", 1)
        assert head == "data:image/png;base64"
        expected = (run / "explanations" / f"graph_{i}.png").read_bytes()
        assert base64.b64decode(b64) == expected
        # shown with the summary, not folded away with the traversals
        assert art.index('class="graph"') < art.index("<details")
    # still self-contained and a pure function of the artefacts
    assert not re.search(r'(?:src|href)="(?!data:|#)', html)
    assert render_report(run) == html


# ---------------------------------------------------------------- the demo's explanation step
def _explanation(n: int = 2, n_random: int = 49) -> Any:
    """A small synthetic LocalExplanation with the significance test (no model)."""
    from glance.explain import LocalExplanation

    rng = np.random.default_rng(0)
    v, g, k = len(NODES), 3, 3
    pred = np.arange(n) % k
    probs = np.full((n, k), 0.1)
    probs[np.arange(n), pred] = 0.8
    imp = rng.uniform(0, 0.5, (n, v))
    rand = rng.uniform(0, 0.3, (n, n_random)) if n_random else None
    sig = None
    if n_random:
        sig = (1 + (rand[:, None, :] >= imp[:, :, None]).sum(-1)) / (n_random + 1)
    images = rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)
    return LocalExplanation(
        nodes=tuple(NODES),
        node_kinds=("context", "context", "concept", "concept"),
        classes=("0", "1", "2"),
        deltas=np.array([-1.0, 0.0, 1.0]),
        prediction=pred,
        probabilities=probs,
        reconstruction_prediction=pred,
        reconstruction_probabilities=probs,
        target=pred,
        importance=imp,
        direct_importance=imp / 2,
        curves=rng.normal(0, 0.1, (n, v, g)),
        direct_curves=rng.normal(0, 0.1, (n, v, g)),
        has_descendants=np.array([True, False, False, False]),
        traversal_classes=np.zeros((n, v, g), dtype=np.int64),
        traversal_probabilities=np.full((n, v, g), 0.5),
        images=images,
        reconstructions=images,
        random_importance=rand,
        significance=sig,
        alpha=0.05 if n_random else None,
    )


class _Test:
    def __len__(self) -> int:
        return 10

    def load_images(self, idx: list[int]) -> Any:
        import torch

        return torch.zeros(len(idx), 1, 8, 8)


class _Est:
    def __init__(self, graph: Any, run: Path) -> None:
        from glance.run import Run

        self.graph_ = graph
        self.run_ = Run.open(run)


def _demo_explain(monkeypatch, run: Path, graph: Any, n: int = 2) -> dict:
    import glance.data
    import glance.explain
    from glance.cli import _demo

    calls: dict = {}

    def fake_explain(est: Any, images: Any, target: Any = None, **kw: Any) -> Any:
        calls.update(kw, n_images=len(images))
        return _explanation(len(images), kw.get("n_random", 0))

    monkeypatch.setattr(glance.data, "load_dataset", lambda data, split: _Test())
    monkeypatch.setattr(glance.data, "test_split", lambda data: "test")
    monkeypatch.setattr(glance.explain, "explain", fake_explain)
    _demo._explain(_Est(graph, run), Path("unused"), run, n)
    return calls


def test_demo_explains_with_49_random_concepts_and_writes_graph_pngs(
    tmp_path: Path, monkeypatch
) -> None:
    from glance.causal import CausalGraph

    graph = CausalGraph.from_edges(
        [*NODES, "output_0", "output_1", "output_2"],
        [("thickness", "intensity"), ("thickness", "output_1"), ("concept_0", "output_2")],
    )
    run = make_fixture_run(tmp_path / "run", with_explanations=False)
    calls = _demo_explain(monkeypatch, run, graph)
    assert calls == {"n_random": 49, "n_images": 2}
    saved = json.loads((run / "explanations" / "explanations.json").read_text())
    assert saved["n_random"] == 49 and set(saved["significance_summary"]) == set(NODES)
    for i in range(2):
        assert (run / "explanations" / f"graph_{i}.png").read_bytes().startswith(b"\x89PNG")
    assert not (run / "explanations" / "graph_2.png").exists()
    Run.open(run)  # the demo's step sealed its explanations into the run
    html = render_report(run)
    assert html.count('<figure class="graph">') == 2
    assert len(_rows(html, "significance")) == 2 * len(NODES)
    assert len(_rows(html, "significance-summary")) == len(NODES)


def test_demo_writes_no_graph_pngs_without_a_graph(tmp_path: Path, monkeypatch) -> None:
    run = make_fixture_run(tmp_path / "run", with_explanations=False)
    _demo_explain(monkeypatch, run, graph=None, n=1)
    assert (run / "explanations" / "explanations.json").is_file()
    assert not list((run / "explanations").glob("graph_*.png"))
