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

    def load(run, classifier=None, device="cpu", **_):
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


def _graph_option(dest):
    from glance.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["graph"]
    return next(a for a in sub._actions if a.dest == dest)


def test_glance_graph_choices_come_from_glance_causal_options():
    from glance.causal import DiscoveryOptions
    from glance.causal import options as opts

    assert _graph_option("method").choices == opts.DISCOVERY_METHODS
    assert _graph_option("ci_test").choices == opts.DATA_CI_TESTS
    assert _graph_option("orientation").choices == opts.ORIENTATIONS
    assert _graph_option("mechanism").choices == opts.MECHANISMS
    defaults = DiscoveryOptions()
    for dest in ("method", "ci_test", "alpha", "orientation", "max_k", "kci_subsample"):
        assert _graph_option(dest).default == getattr(defaults, dest)


def test_glance_graph_passes_max_k_and_kci_subsample(fake_run):
    argv = ["-q", "graph", str(fake_run), "--bootstrap", "0", "--ci-test", "kci"]
    assert main([*argv, "--max-k", "1", "--kci-subsample", "80"]) == 0
    params = json.loads((fake_run / "graph" / "graph.json").read_text())["meta"]["params"]
    assert params["ci_test"] == "kci" and params["max_k"] == 1 and params["kci_subsample"] == 80


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--max-k", "-1", "an integer >= 0"),
        ("--kci-subsample", "19", "an integer >= 20"),
        ("--method", "lingam", "invalid choice"),
        ("--ci-test", "d_separation", "invalid choice"),
        ("--mechanism", "spline", "invalid choice"),
    ],
)
def test_glance_graph_rejects_bad_discovery_options(fake_run, capsys, option, value, expected):
    assert main(["graph", str(fake_run), option, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option in err and expected in err


def test_missing_data_record_is_reported(tmp_path):
    from glance.exceptions import DataValidationError

    with Run(tmp_path).writing():
        run = Run.create(tmp_path, {})
    with pytest.raises(DataValidationError, match=r"no record of its training data \(data.json\)"):
        run.dataset("train")
