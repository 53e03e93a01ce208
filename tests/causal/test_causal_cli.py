from __future__ import annotations

import json

import pytest
from causal_helpers import StubDataset as _Dataset
from causal_helpers import StubGlance as _Glance

import glance.estimator
from glance._io import verify_manifest
from glance.cli import _graph
from glance.cli.main import main


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    data = _Dataset(seed=1)
    monkeypatch.setattr(glance.estimator, "load", lambda run, device="cpu": _Glance(data))
    monkeypatch.setattr(_graph, "run_dataset", lambda run, d, split, role: data)
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text("{}")
    return run


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

    with pytest.raises(DataValidationError, match="no data.json"):
        _graph.run_dataset(tmp_path, None, None, "train")
