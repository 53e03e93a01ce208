"""The whole pipeline through the CLI on a small causal-shapes set (every area's public entry).

data shapes → train-classifier → fit (tiny) → graph → evaluate --truth → explain, and the
Python API on the same run: ``glance.load`` restores the graph and SCM, ``Glance.explain``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glance.cli.main import main


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    data, model, run = root / "data", root / "clf.safetensors", root / "run"
    assert main(["-q", "data", "shapes", "--out", str(data), "--n", "600", "--jobs", "1"]) == 0
    rc = main(
        [
            "-q",
            "train-classifier",
            "--data",
            str(data),
            "--arch",
            "small-cnn",
            "--out",
            str(model),
            "--epochs",
            "2",
            "--threads",
            "2",
        ]
    )
    assert rc == 0
    contexts = "shape,size,hue,brightness,pos_x,pos_y"
    rc = main(
        [
            "-q",
            "fit",
            "--data",
            str(data),
            "--classifier",
            str(model),
            "--contexts",
            contexts,
            "--preset",
            "tiny",
            "--out",
            str(run),
        ]
    )
    assert rc == 0
    assert main(["-q", "graph", str(run), "--bootstrap", "0"]) == 0
    return data, run


def test_evaluate_with_truth_scores_the_graph(shapes_run, capsys):
    data, run = shapes_run
    rc = main(["-q", "evaluate", str(run), "--truth", str(data / "truth.json")])
    assert rc == 0
    metrics = json.loads((run / "metrics.json").read_text())
    graph = metrics["graph"]
    assert {"shd", "precision", "recall", "f1", "orientation_accuracy"} <= set(graph)
    assert isinstance(graph["shd"], int) and graph["shd"] >= 0
    assert set(graph["nodes"]) <= {"shape", "size", "hue", "brightness", "pos_x", "pos_y"}
    assert graph["outputs"], "every output node is checked for the label-rule factors"


def test_evaluate_truth_without_graph_is_one_line_error(tmp_path, shapes_run, capsys):
    data, run = shapes_run
    rc = main(["evaluate", str(run), "--truth", str(tmp_path / "missing.json")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.json" in err


def test_load_restores_graph_and_explain_propagates(shapes_run):
    import glance
    from glance.data import load_dataset

    data, run = shapes_run
    est = glance.load(run)
    assert est.graph_ is not None and est.scm_ is not None
    images = load_dataset(data, "test").load_images([0, 1, 2])
    exp = est.explain(images)
    d = exp.to_dict()
    per_image = d["explanations"] if "explanations" in d else d
    assert len(per_image) == 3
    first = per_image[0]
    assert set(first["importance"]) >= {"shape", "size"}
    cf = first["counterfactual"]
    assert {"target", "nodes", "prediction"} <= set(cf)


def test_explain_cli_on_the_run(shapes_run, tmp_path):
    data, run = shapes_run
    out = tmp_path / "exp"
    rc = main(["-q", "explain", str(run), "--data", str(data), "--index", "0:2", "--out", str(out)])
    assert rc == 0
    assert (out / "explanations.json").is_file()


@pytest.mark.filterwarnings("ignore:LOW FIDELITY")
def test_glance_explain_runs_every_registered_explainer(shapes_run):
    """Each entry of EXPLAINERS is a drop-in explainer of a fitted model, chosen by name."""
    import glance
    from glance.data import load_dataset
    from glance.exceptions import UnknownNameError
    from glance.explain import EXPLAINERS

    data, run = shapes_run
    est = glance.load(run)
    images = load_dataset(data, "test").load_images([0, 1])
    for name in EXPLAINERS.names():
        exp = est.explain(images, explainer=name, keep_images=False)
        assert exp.meta["method"] == EXPLAINERS.get(name).__name__
        assert exp.importance.shape == (2, len(exp.nodes))
    with pytest.raises(UnknownNameError, match="valid names: counterfactual, importance, local"):
        est.explain(images, explainer="gradcam")
