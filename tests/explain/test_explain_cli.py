"""``glance explain`` through main(argv), with a stand-in for a fitted run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from toy_run import serve_toy_run

from glance.cli.main import main
from glance.explain import EXPLAINERS, toy


@pytest.fixture
def run(monkeypatch, tmp_path):
    return serve_toy_run(monkeypatch, tmp_path / "run")


def _png(path, z):
    img = (toy.render(torch.tensor([z]))[0, 0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


def test_explain_image_files(run, tmp_path):
    a = _png(tmp_path / "a.png", [1.0, 0.0, 0.0])
    b = _png(tmp_path / "b.png", [-1.0, 0.5, 0.0])
    out = tmp_path / "out"
    assert main(["-q", "explain", str(run), str(a), str(b), "--out", str(out)]) == 0
    data = json.loads((out / "explanations.json").read_text())
    recs = data["explanations"]
    assert [r["prediction"] for r in recs] == [1, 0]
    assert all(max(r["importance"], key=r["importance"].get) == "size" for r in recs)
    assert all(r["counterfactual"]["valid"] for r in recs)
    assert (out / "summary_0.png").exists() and (out / "traversal_1.png").exists()


def test_explain_target_and_no_pngs(run, tmp_path):
    a = _png(tmp_path / "a.png", [1.0, 0.0, 0.0])
    out = tmp_path / "out"
    rc = main(["-q", "explain", str(run), str(a), "--target", "1", "--no-pngs", "--out", str(out)])
    assert rc == 0
    rec = json.loads((out / "explanations.json").read_text())["explanations"][0]
    assert rec["counterfactual"]["target"] == 1 and rec["counterfactual"]["nodes"] == {}
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize(
    ("method", "has_counterfactual", "has_interactions"),
    [("importance", False, False), ("counterfactual", True, False)],
)
def test_explain_method_picks_the_registered_explainer(
    run, tmp_path, method, has_counterfactual, has_interactions
):
    a = _png(tmp_path / "a.png", [1.0, 0.0, 0.0])
    out = tmp_path / "out"
    argv = ["-q", "explain", str(run), str(a), "--method", method, "--out", str(out)]
    assert main([*argv, "--no-pngs"]) == 0
    data = json.loads((out / "explanations.json").read_text())
    assert data["meta"]["method"] == EXPLAINERS.get(method).__name__
    rec = data["explanations"][0]
    assert max(rec["importance"], key=rec["importance"].get) == "size"
    assert (rec["counterfactual"] is not None) == has_counterfactual
    assert (rec["interactions"] is not None) == has_interactions


def test_explain_method_choices_come_from_the_registry(run, tmp_path, capsys):
    from glance.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["explain"]
    method = next(a for a in sub._actions if a.dest == "method")
    assert method.choices == EXPLAINERS.names() and method.default == "local"
    a = _png(tmp_path / "a.png", [1.0, 0.0, 0.0])
    assert main(["explain", str(run), str(a), "--method", "lime"]) == 2
    assert "invalid choice: 'lime'" in capsys.readouterr().err
    argv = ["explain", str(run), str(a), "--method", "counterfactual", "--significance", "19"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "n_random" in capsys.readouterr().err


def test_explain_errors_are_one_line(run, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(big)
    assert main(["explain", str(run), str(big), "--out", str(tmp_path / "o")]) == 2
    assert "16x16" in capsys.readouterr().err
    assert main(["explain", str(run), "--out", str(tmp_path / "o")]) == 2
    assert "exactly one" in capsys.readouterr().err
    a = _png(tmp_path / "a.png", [1.0, 0.0, 0.0])
    assert main(["explain", str(run), str(a), "--target", "7", "--out", str(tmp_path / "o")]) == 2
    assert "--target 7: the classifier has 2 classes" in capsys.readouterr().err
    # an existing output outside the run is the user's: replaced only with --force
    assert main(["explain", str(run), str(a), "--out", str(tmp_path)]) == 2
    assert "exists and is not empty; pass --force" in capsys.readouterr().err
    assert main(["explain", str(run), str(a), "--out", str(big)]) == 2
    assert "exists and is a file" in capsys.readouterr().err


def test_explain_data_index(run, tmp_path):
    z = toy.sample_concepts(10, random_state=5)
    imgs = (toy.render(z)[:, 0].numpy() * 255).round().astype(np.uint8)
    np.savez(tmp_path / "d.npz", images=imgs)
    out = tmp_path / "out"
    argv = ["-q", "explain", str(run), "--data", str(tmp_path / "d.npz"), "--index", "2:5"]
    assert main([*argv, "--out", str(out), "--no-pngs"]) == 0
    recs = json.loads((out / "explanations.json").read_text())["explanations"]
    assert len(recs) == 3
    probs = torch.softmax(toy.SizeClassifier()(torch.as_tensor(imgs[2:5, None] / 255.0).float()), 1)
    assert [r["prediction"] for r in recs] == probs.argmax(1).tolist()


def test_parse_index():
    from glance.cli._explain import parse_index

    assert parse_index("0:3", 10).tolist() == [0, 1, 2]
    assert parse_index("8:", 10).tolist() == [8, 9]
    assert parse_index("1,4", 10).tolist() == [1, 4]
    with pytest.raises(Exception, match="index"):
        parse_index("20:30", 10)
    with pytest.raises(Exception, match="index"):
        parse_index("a:b", 10)


def test_explain_calibrated_draws_through_the_fits_measurement(
    monkeypatch, tmp_path, capsys, caplog
):
    a = _png(tmp_path / "a.png", [0.2, 0.0, 0.0])
    plain = serve_toy_run(monkeypatch, tmp_path / "plain")
    assert (
        main(["-q", "explain", str(plain), str(a), "--calibrated", "--out", str(tmp_path / "x")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "--calibrated: the run" in err and "measured no calibration" in err
    assert len(err.splitlines()) == 1
    # the fit measured size drawn at half the asked change: a calibrated twin draws it twice
    measured = {"context_readback_": np.diag([0.5, 1.0]), "context_tied_": np.zeros((2, 2), bool)}
    run = serve_toy_run(monkeypatch, tmp_path / "run", **measured)
    imp = {}
    for flag in ([], ["--calibrated"]):
        out = tmp_path / f"out{len(flag)}"
        assert main(["-q", "explain", str(run), str(a), "--out", str(out), *flag]) == 0
        data = json.loads((out / "explanations.json").read_text())
        assert data["meta"]["calibrated_interventions"] is bool(flag)
        imp[bool(flag)] = data["explanations"][0]["importance"]
        # one line says which bars rest on a change drawn only in part (none once calibrated)
        assert ("size at 50% of an asked change" in caplog.text) is not bool(flag)
        assert "brightness at" not in caplog.text
        caplog.clear()
        assert data["meta"]["drawn"]["size"] == pytest.approx(1.0 if flag else 0.5)
    assert imp[True]["size"] > imp[False]["size"]
    assert imp[True]["concept_0"] == pytest.approx(imp[False]["concept_0"])
