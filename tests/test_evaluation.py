"""glance evaluate's figures that see the image: readback R², SSIM, effectiveness and specificity
of every readable context, the context readers beside them, and the report's stamp."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from glance.data import ArrayDataset
from glance.estimator import Glance
from glance.evaluation import _soundness
from glance.explain import Twin, toy
from glance.metrics import readers
from glance.report import render_report
from glance.run import Run
from helpers import TinyCNN, make_dataset, torch_threads

CONTEXTS = ["thickness", "intensity", "noise"]
CONFIG = {
    "train": {
        "encoder_steps": 8,
        "generator_steps": 6,
        "encoder_batch": 16,
        "generator_batch": 8,
        "eval_images": 48,
    }
}


def _rgb_blobs(n: int = 360) -> ArrayDataset:
    """RGB blobs with a visible radius and brightness, and a 'noise' context no image shows."""
    base = make_dataset(n, size=16, channels=3, seed=4)
    noise = np.random.default_rng(7).normal(size=n)
    return ArrayDataset(
        base.images,
        labels=base.labels,
        attributes=np.column_stack([base.attributes, noise]),
        attribute_names=[*base.attribute_names, "noise"],
        source="<rgb blobs>",
    )


def _grades(html: str) -> dict[str, str]:
    """Metric row key → grade, from the report's table."""
    return dict(re.findall(r'data-metric="([^"]+)" data-grade="([^"]+)"', html))


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny networks run fastest on one thread."""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    with torch_threads(1):  # as the autouse fixture does for function-scoped tests
        data = _rgb_blobs()
        torch.manual_seed(0)
        est = Glance(
            TinyCNN(channels=3).eval(),
            contexts=CONTEXTS,
            preset="tiny",
            config=CONFIG,
            random_state=0,
            quiet=True,
            n_threads=1,
        )
        est.fit(data, out=tmp_path_factory.mktemp("eval") / "run")
    return est, data


def test_metrics_json_has_the_figures_that_see_the_image(fitted):
    est, data = fitted
    m = est.evaluate(data, out=est.run_.path)
    saved = json.loads((est.run_.path / "metrics.json").read_text())
    for key in (
        "readback_r2",
        "reconstruction_ssim",
        "reconstruction_edges",
        "readers",
        "readers_training",
    ):
        assert key in saved, key
    assert -1.0 <= m["reconstruction_ssim"] <= 1.0
    assert -1.0 <= m["reconstruction_edges"] <= 1.0
    # the reader's own held-out R² and source beside each figure
    assert set(m["readers"]) == set(CONTEXTS)
    for c in ("thickness", "intensity"):
        assert m["readers"][c]["source"] == "cnn" and m["readers"][c]["heldout_r2"] > 0.8
        assert isinstance(m["readback_r2"][c], float)
    assert "without the images measured" in m["readers_training"]["data"]
    # a context no image shows: every figure that would need it is None, with the reason
    assert m["readers"]["noise"]["readable"] is False
    cs = m["counterfactual_soundness"]
    assert m["readback_r2"]["noise"] is None and "R²" in m["readback_r2_unmeasured"]["noise"]
    assert cs["effectiveness"]["noise"] is None and cs["effectiveness_unmeasured"]["noise"]
    assert cs["specificity"]["noise"] is None and cs["specificity_unmeasured"]["noise"]
    # effectiveness and specificity of the readable contexts, measured by the reader
    for c in ("thickness", "intensity"):
        eff = cs["effectiveness"][c]
        assert eff["node"] == c and eff["n_images"] == 48
        assert -1.0 <= eff["spearman"] <= 1.0 or math.isnan(eff["spearman"])
    spec = cs["specificity"]["thickness"]
    assert set(spec["cross_talk"]) == {"intensity"} and spec["unreadable"] == ["noise"]
    assert spec["worst_context"] == "intensity" and spec["worst"] >= 0
    assert "no causal graph" in cs["specificity_note"]  # the run has none: said so
    # the reader is sealed in the run, and the report shows every new figure
    run = Run.open(est.run_.path)
    assert run.sealed(f"{run.readers_dir}/reader.json")
    rows = _grades(render_report(run.path))
    for key in (
        "reconstruction_ssim",
        "readback_r2.thickness",
        "readback_r2.noise",
        "counterfactual_specificity.thickness",
    ):
        assert key in rows, key
    assert rows["readback_r2.noise"] == "missing"


def test_a_second_evaluation_reuses_the_reader_of_the_run(fitted, monkeypatch):
    est, data = fitted
    est.evaluate(data, out=est.run_.path)  # caches the reader (if no test did yet)

    def refuse(*args, **kwargs):
        raise AssertionError("the cached reader should have been used")

    monkeypatch.setattr(readers, "fit_reader", refuse)
    m = est.evaluate(data)
    assert m["readers"]["thickness"]["heldout_r2"] > 0.8


def test_a_twin_drawing_grey_squares_fails_readback_and_stamps_the_report(fitted, monkeypatch):
    est, data = fitted
    shape = est.image_shape_

    def grey(z: torch.Tensor) -> torch.Tensor:
        return torch.full((len(z), *shape), 0.5)

    monkeypatch.setattr(est, "generate", grey)
    m = est.evaluate(data, out=est.run_.path)
    assert m["reconstruction_ssim"] < 0.3
    assert m["reconstruction_edges"] < 0.6  # no edge of any object is drawn
    for c in ("thickness", "intensity"):
        assert m["readback_r2"][c] < 0.1  # a constant reading explains no variance
        assert m["readers"][c]["evaluation_r2"] > 0.8  # while the real images are read well
    html = render_report(est.run_.path)
    assert 'id="low-fidelity"' in html and 'id="low-reconstruction"' in html
    rows = _grades(html)
    assert rows["readback_r2.thickness"] == "fail" and rows["reconstruction_ssim"] == "fail"
    assert rows["reconstruction_edges"] == "fail"
    assert "Reconstruction edges is" in html  # named in the banner
    assert "Readback R²: thickness" in html


class _ToyReader:
    """The toy world's exact measurement of size and brightness, as a context reader."""

    contexts = ("size", "brightness")
    std = np.ones(2)

    def __init__(self, tied: bool = False) -> None:
        self.tied = tied  # as if fitted on data where size and brightness go together

    def readable(self, name: str) -> bool:
        return True

    def read_through(self, name: str) -> list[str]:
        return [c for c in self.contexts if c != name] if self.tied else []

    def reason(self, name: str) -> None:
        return None

    def read(self, images: torch.Tensor) -> np.ndarray:
        return toy.measure(images)[:, :2].double().numpy()


@pytest.mark.parametrize("with_scm", [True, False])
def test_specificity_leaves_out_the_descendants_of_the_graph(monkeypatch, with_scm):
    twin = toy.make_twin(with_scm=with_scm)  # SCM size -> brightness (coefficient 0.8)
    monkeypatch.setattr(Twin, "from_glance", classmethod(lambda cls, est, **_: twin))
    est = SimpleNamespace(context_names_=["size", "brightness"], context_std_=np.ones(2))
    images = toy.render(toy.sample_concepts(16, random_state=1))
    res = _soundness(est, images, _ToyReader())
    size, bright = res["specificity"]["size"], res["specificity"]["brightness"]
    assert bright["cross_talk"]["size"] == pytest.approx(0.0, abs=0.05)  # not a cause of size
    assert res["effectiveness"]["size"]["spearman"] > 0.95
    if with_scm:
        # brightness is a descendant of size: its change is the graph's, not cross-talk
        assert size["excluded"] == ["brightness"] and size["cross_talk"] == {}
        assert size["worst"] is None and "specificity_note" not in res
    else:
        assert size["excluded"] == []
        assert size["cross_talk"]["brightness"] == pytest.approx(0.0, abs=0.05)
        assert "no causal graph" in res["specificity_note"]


def test_specificity_does_not_compare_a_context_its_reader_may_read_through_the_moved_one(
    monkeypatch,
):
    twin = toy.make_twin(with_scm=False)
    monkeypatch.setattr(Twin, "from_glance", classmethod(lambda cls, est, **_: twin))
    est = SimpleNamespace(context_names_=["size", "brightness"], context_std_=np.ones(2))
    images = toy.render(toy.sample_concepts(16, random_state=1))
    res = _soundness(est, images, _ToyReader(tied=True))
    for name, other in (("size", "brightness"), ("brightness", "size")):
        spec = res["specificity"][name]
        assert spec["tied"] == [other] and spec["cross_talk"] == {} and spec["worst"] is None
        assert spec["excluded"] == []  # not a descendant: left out for the reader's sake
    # effectiveness is still read
    assert res["effectiveness"]["size"]["spearman"] > 0.95
