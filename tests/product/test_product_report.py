"""The HTML report: structure, honesty of its figures, refusal of tampered runs, CLI."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from product_helpers import make_fixture_run

from glance._io import write_manifest
from glance.cli.main import main
from glance.exceptions import CheckpointCorruptError, CheckpointIncompatibleError
from glance.report import THRESHOLDS, grade, render_report, write_report

SECTIONS = [
    "faithfulness",
    "causal-graph",
    "global-importance",
    "local-explanations",
    "interactions",
    "surrogate",
    "provenance",
]


class _Collect(HTMLParser):
    """Collect ids, metric rows (grade, value text, all their text) and every URL attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.rows: dict[str, dict] = {}
        self.urls: list[str] = []
        self.imgs: list[str] = []
        self._row: str | None = None
        self._cell = 0
        self._in_value = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("src", "href", "xlink:href", "action"):
            if key in a and not a[key].startswith("#"):
                self.urls.append(a[key])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "tr" and "data-metric" in a:
            self._row = a["data-metric"]
            self.rows[self._row] = {"grade": a.get("data-grade"), "value": "", "text_all": ""}
        if tag == "td" and self._row is not None:
            self._in_value = "value" in (a.get("class") or "")

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        if tag == "td":
            self._in_value = False

    def handle_data(self, data):
        if self._row is not None:
            self.rows[self._row]["text_all"] += data
        if self._row is not None and self._in_value:
            self.rows[self._row]["value"] += data.strip()


def _parse(html: str) -> _Collect:
    p = _Collect()
    p.feed(html)
    return p


def test_report_has_every_section_and_figure_from_metrics(fixture_run: Path) -> None:
    html = render_report(fixture_run)
    doc = _parse(html)
    assert set(SECTIONS) <= doc.ids
    metrics = json.loads((fixture_run / "metrics.json").read_text())
    # every figure shown comes from metrics.json, with its grade against the threshold table
    assert doc.rows["fidelity"]["value"] == f"{metrics['fidelity']:.4g}"
    assert doc.rows["fidelity"]["grade"] == "pass"  # 0.981 >= 0.97
    assert doc.rows["sampled_fidelity"]["grade"] == "fail"  # 0.874 < 0.90
    assert doc.rows["alignment_r2.intensity"]["grade"] == "warn"  # 0.8 <= 0.85 < 0.9
    assert doc.rows["alignment_r2.thickness"]["grade"] == "pass"
    assert doc.rows["generated_alignment.intensity"]["grade"] == "fail"
    assert doc.rows["dci.completeness"]["value"] == "0.55"
    assert doc.rows["fid"]["grade"] == "info"
    # counterfactual soundness: effectiveness graded per context, the rest shown for information
    assert doc.rows["counterfactual_effectiveness.thickness"]["grade"] == "pass"
    assert doc.rows["counterfactual_effectiveness.intensity"]["grade"] == "missing"
    assert doc.rows["counterfactual_reversibility"]["value"] == "0.97"
    assert doc.rows["counterfactual_composition"]["grade"] == "info"
    assert "LOW FIDELITY" not in html
    assert "low-fidelity" not in doc.ids
    assert "<dt>precision</dt><dd>bf16</dd>" in html  # what the fit trained in, from state.json


def test_changed_metrics_change_the_report(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "r", fidelity=0.9123)
    doc = _parse(render_report(run))
    assert doc.rows["fidelity"]["value"] == "0.9123"
    assert doc.rows["fidelity"]["grade"] == "fail"
    assert "low-fidelity" in doc.ids


def test_mig_is_shown_beside_its_reference(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "r", metrics_extra={"mig_reference": 0.2345})
    doc = _parse(render_report(run))
    assert doc.rows["mig"]["value"] == "0.31"
    assert doc.rows["mig_reference"]["value"] == "0.2345"
    assert doc.rows["mig_reference"]["grade"] == "info"


READBACK = {
    "reconstruction_ssim": 0.81,
    "readback_r2": {"thickness": 0.9, "intensity": None},
    "readback_r2_unmeasured": {"intensity": "the reader CNN read 'intensity' with R² 0.12"},
    "readers": {
        "thickness": {"heldout_r2": 0.97, "source": "cnn"},
        "intensity": {"heldout_r2": 0.12, "source": "cnn"},
    },
}


def test_reconstruction_figures_below_their_floor_stamp_the_report(tmp_path: Path) -> None:
    html = render_report(make_fixture_run(tmp_path / "good", metrics_extra=READBACK))
    doc = _parse(html)
    assert doc.rows["reconstruction_ssim"]["grade"] == "pass"
    assert doc.rows["readback_r2.thickness"]["grade"] == "pass"
    assert doc.rows["readback_r2.intensity"]["grade"] == "missing"
    assert "R² 0.12" in html and "held-out R² 0.97" in html  # the reason; the reader's own R²
    assert "low-fidelity" not in doc.ids
    for i, (change, shown) in enumerate(
        (
            ({"reconstruction_ssim": 0.41}, "Reconstruction SSIM is 0.41"),
            (
                {"readback_r2": {"thickness": 0.35, "intensity": None}},
                "Readback R²: thickness is 0.35",
            ),
        )
    ):
        run = make_fixture_run(tmp_path / f"bad{i}", metrics_extra={**READBACK, **change})
        html = render_report(run)
        doc = _parse(html)
        assert {"low-fidelity", "low-reconstruction"} <= doc.ids
        assert shown in html and "the surrogate agrees" not in html  # fidelity itself passes


def test_a_readback_read_through_a_tied_context_says_what_it_cannot_see(tmp_path: Path) -> None:
    extra = {
        "readback_r2": {"shape": 0.99, "size": 0.95},
        "readers": {
            "shape": {"heldout_r2": 0.99, "source": "cnn", "read_through": ["hue"]},
            "size": {"heldout_r2": 0.98, "source": "cnn", "read_through": []},
        },
    }
    doc = _parse(render_report(make_fixture_run(tmp_path / "run", metrics_extra=extra)))
    shape, size = doc.rows["readback_r2.shape"], doc.rows["readback_r2.size"]
    assert "read shape through hue" in shape["text_all"] and "loses shape" in shape["text_all"]
    assert "through" not in size["text_all"]
    extra["readers"]["shape"]["read_through"] = "hue"  # not a list: a foreign metrics.json
    doc = _parse(render_report(make_fixture_run(tmp_path / "odd", metrics_extra=extra)))
    assert "through" not in doc.rows["readback_r2.shape"]["text_all"]


def test_specificity_rows_grade_the_worst_cross_talk(tmp_path: Path) -> None:
    cs = {
        "effectiveness": {"thickness": {"spearman": 0.9}, "intensity": {"spearman": 0.85}},
        "specificity": {
            "thickness": {"worst": 0.04, "worst_context": "intensity"},
            "intensity": {"worst": 0.3, "worst_context": "thickness"},
        },
        "specificity_note": "no causal graph in the run",
    }
    html = render_report(
        make_fixture_run(tmp_path / "run", metrics_extra={"counterfactual_soundness": cs})
    )
    doc = _parse(html)
    assert doc.rows["counterfactual_specificity.thickness"]["grade"] == "pass"
    assert doc.rows["counterfactual_specificity.intensity"]["grade"] == "fail"
    assert "worst: thickness" in html and "no causal graph in the run" in html
    assert "low-fidelity" not in doc.ids  # counterfactual figures do not stamp the run


def test_soundness_rows_name_what_a_reader_may_read_through(tmp_path: Path) -> None:
    cs = {
        "effectiveness": {
            "shape": {"spearman": 0.9, "read_through": ["hue"]},
            "size": {"spearman": 0.95, "read_through": []},
        },
        "specificity": {
            "hue": {"worst": 0.05, "worst_context": "size", "tied": ["shape"]},
            "size": {"worst": 0.02, "worst_context": "hue", "tied": []},
        },
    }
    html = render_report(
        make_fixture_run(tmp_path / "run", metrics_extra={"counterfactual_soundness": cs})
    )
    doc = _parse(html)
    assert "may read it through hue" in doc.rows["counterfactual_effectiveness.shape"]["text_all"]
    assert "may read it" not in doc.rows["counterfactual_effectiveness.size"]["text_all"]
    assert "not compared: shape" in doc.rows["counterfactual_specificity.hue"]["text_all"]
    assert "not compared" not in doc.rows["counterfactual_specificity.size"]["text_all"]


def test_report_is_self_contained(fixture_run: Path) -> None:
    html = render_report(fixture_run)
    doc = _parse(html)
    assert doc.urls, "expected embedded pictures"
    assert all(u.startswith("data:image/") for u in doc.urls), doc.urls
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)
    assert "<link" not in html and "<script" not in html
    # graph.png, reconstructions, samples; summary, traversal and interaction per image
    assert len(doc.imgs) == 3 + 3 * 3
    for uri in doc.imgs:
        head, b64 = uri.split(",", 1)
        assert base64.b64decode(b64).startswith(b"\x89PNG")


def test_report_is_a_pure_function_of_the_artefacts(fixture_run: Path, tmp_path: Path) -> None:
    a = render_report(fixture_run)
    assert render_report(fixture_run) == a
    copy = make_fixture_run(tmp_path / "run")  # same artefacts, other place
    assert render_report(copy) == a


def test_missing_sections_say_not_computed(tmp_path: Path) -> None:
    run = make_fixture_run(
        tmp_path / "run", with_metrics=False, with_graph=False, with_explanations=False
    )
    html = render_report(run)
    doc = _parse(html)
    assert set(SECTIONS) <= doc.ids
    assert html.count("Not computed") >= 5
    assert "NOT EVALUATED" in html
    assert not doc.rows


def test_global_importance_falls_back_to_mean_local(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "run")
    (run / "graph" / "global_importance.json").unlink()
    write_manifest(run)
    html = render_report(run)
    assert "mean |total effect| over the 3 explained images" in html


def test_tampered_run_is_refused(fixture_run: Path) -> None:
    (fixture_run / "metrics.json").write_text(json.dumps({"fidelity": 0.999}))
    with pytest.raises(CheckpointCorruptError, match="metrics.json: sha256 mismatch"):
        render_report(fixture_run)


def test_newer_format_is_refused(fixture_run: Path) -> None:
    manifest = json.loads((fixture_run / "MANIFEST.json").read_text())
    manifest["format_version"] = 999
    (fixture_run / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointIncompatibleError, match="format 999"):
        render_report(fixture_run)


def test_picture_path_outside_run_is_refused(fixture_run: Path) -> None:
    path = fixture_run / "explanations" / "explanations.json"
    data = json.loads(path.read_text())
    data["explanations"][0]["extra_png"] = "../../../etc/secret.png"
    path.write_text(json.dumps(data))
    write_manifest(fixture_run)
    with pytest.raises(CheckpointCorruptError, match="leaves the run directory"):
        render_report(fixture_run)


def test_non_png_picture_is_refused(fixture_run: Path) -> None:
    (fixture_run / "graph" / "graph.png").write_bytes(b"<html>not a picture</html>")
    write_manifest(fixture_run)
    with pytest.raises(CheckpointCorruptError, match="graph.png: expected a PNG"):
        render_report(fixture_run)


def test_grade_against_threshold_table() -> None:
    assert grade("fidelity", THRESHOLDS["fidelity"].target) == "pass"
    assert grade("fidelity", 0.96) == "warn"
    assert grade("fidelity", 0.5) == "fail"
    assert grade("fidelity", None) == "missing"
    assert grade("fidelity", float("nan")) == "missing"
    assert grade("mig", 0.1) == "info"
    assert grade("unknown_metric", 3.0) == "info"


def test_cli_report_writes_file(fixture_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "r.html"
    assert main(["report", str(fixture_run), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert capsys.readouterr().out.strip().endswith(str(out))
    # default location
    assert main(["report", str(fixture_run)]) == 0
    assert (fixture_run / "report.html").is_file()
    assert write_report(fixture_run) == fixture_run / "report.html"


def test_cli_report_refuses_tampered_run_in_one_line(fixture_run: Path, capsys) -> None:
    (fixture_run / "state.json").write_text("{}")
    rc = main(["report", str(fixture_run)])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1
    assert "state.json" in err and "sha256 mismatch" in err
    assert not (fixture_run / "report.html").exists()


def test_cli_report_missing_run(tmp_path: Path, capsys) -> None:
    rc = main(["report", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert rc != 0 and "run directory not found" in err and "nope" in err


def test_assumed_orientations_are_shown(fixture_run: Path) -> None:
    path = fixture_run / "graph" / "graph.json"
    graph = json.loads(path.read_text())
    graph["meta"] = {
        "assumptions": [{"source": "thickness", "target": "intensity", "reason": "tier order"}]
    }
    path.write_text(json.dumps(graph))
    write_manifest(fixture_run)
    html = render_report(fixture_run)
    assert "Assumed orientations" in html
    assert "thickness → intensity: tier order" in html
    assert "(assumed orientation)" in html


def test_glance_load_checks_the_manifest_first(fixture_run: Path) -> None:
    import glance

    (fixture_run / "model" / "encoder.safetensors").write_bytes(b"tampered")
    with pytest.raises(CheckpointCorruptError, match="encoder.safetensors: sha256 mismatch"):
        glance.load(fixture_run)
    (fixture_run / "MANIFEST.json").unlink()
    with pytest.raises(CheckpointCorruptError, match="MANIFEST.json missing"):
        glance.load(fixture_run)


def test_partly_drawn_contexts_are_named_above_the_local_explanations(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "run")
    assert 'id="partly-drawn"' not in render_report(run)  # nothing measured, nothing said
    path = run / "explanations" / "explanations.json"
    data = json.loads(path.read_text())
    data.setdefault("meta", {})["drawn"] = {"thickness": 0.95, "intensity": 0.59, "hue": 1.6}
    data["meta"]["partly_drawn"] = {"intensity": 0.59, "hue": 1.6}
    path.write_text(json.dumps(data))
    write_manifest(run)
    html = render_report(run)
    note = html[html.index('id="partly-drawn"') :].split("</p>")[0]
    assert "<strong>intensity</strong> at 59%" in note
    assert "<strong>hue</strong> at 160%" in note
    assert "thickness" not in note  # not flagged: no note
