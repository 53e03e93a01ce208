from __future__ import annotations

import json

import pytest
from causal_helpers import StubDataset as _Dataset
from causal_helpers import StubGlance as _Glance

import glance.estimator
from glance._io import verify_manifest
from glance.cli.main import main
from glance.run import Run


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    data = _Dataset(seed=1)
    path = tmp_path / "run"
    path.mkdir()
    with Run(path).writing():
        Run.create(path, {})

    def load(run, classifier=None, device="cpu"):
        stub = _Glance(data)
        stub.run_ = Run.open(run)
        return stub

    monkeypatch.setattr(glance.estimator, "load", load)
    monkeypatch.setattr(Run, "dataset", lambda self, role, d=None, split=None: data)
    return path


def test_glance_graph_writes_the_artefacts_and_reseals_the_run(fake_run, tmp_path, capsys):
    knowledge = tmp_path / "k.yaml"
    knowledge.write_text("tiers:\n  - [thickness]\n  - [intensity]\n")
    rc = main(
        [
            "graph",
            str(fake_run),
            "--bootstrap",
            "3",
            "--jobs",
            "1",
            "--seed",
            "1",
            "--knowledge",
            str(knowledge),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "thickness -> intensity" in out and "graph written to" in out
    graph = json.loads((fake_run / "graph" / "graph.json").read_text())
    assert graph["meta"]["params"]["knowledge"]["tiers"] == [["thickness"], ["intensity"]]
    assert {"nodes", "edges"} <= set(graph)
    manifest = verify_manifest(fake_run)
    assert "graph/graph.png" in manifest["files"]


def test_glance_graph_errors_are_one_line(fake_run, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers:\n  - [thicknes]\n")
    assert main(["graph", str(fake_run), "--bootstrap", "0", "--knowledge", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glance: error:") and "Did you mean 'thickness'" in err
    assert main(["graph", str(fake_run), "--bootstrap", "0", "--outputs", "medium"]) == 2
    assert "unknown class" in capsys.readouterr().err


def test_missing_data_record_is_reported(tmp_path):
    from glance.exceptions import DataValidationError

    with Run(tmp_path).writing():
        run = Run.create(tmp_path, {})
    with pytest.raises(DataValidationError, match=r"no record of its training data \(data.json\)"):
        run.dataset("train")
