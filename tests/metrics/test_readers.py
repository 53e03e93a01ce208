"""Anti-causal context readers: what they read, what they refuse, determinism, the run cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glance.data import ArrayDataset
from glance.exceptions import ShapeError
from glance.metrics import readers
from glance.metrics.readers import (
    READABLE_R2,
    ContextReader,
    ContextReaderNet,
    ReaderConfig,
    fit_reader,
    load_or_fit_reader,
    r2_score,
)
from glance.run import Run
from helpers import make_dataset, torch_threads

FAST = ReaderConfig(min_steps=60, max_steps=150)


def _blobs(n: int, *, channels: int = 3, seed: int = 0) -> ArrayDataset:
    """Blobs of :func:`make_dataset` plus a context 'noise' that no image shows."""
    base = make_dataset(n, size=16, channels=channels, seed=seed)
    noise = np.random.default_rng(seed + 100).normal(size=n)
    return ArrayDataset(
        base.images,
        labels=base.labels,
        attributes=np.column_stack([base.attributes, noise]),
        attribute_names=[*base.attribute_names, "noise"],
        source=f"<blobs {seed}>",
    )


@pytest.fixture(scope="module")
def rgb_blobs() -> ArrayDataset:
    return _blobs(400)


@pytest.fixture(scope="module")
def rgb_reader(rgb_blobs) -> ContextReader:
    with torch_threads(1):  # as the autouse fixture does for function-scoped tests
        return fit_reader(rgb_blobs, ["thickness", "noise"], random_state=0)


def test_reader_reads_a_visible_context_and_refuses_an_invisible_one(rgb_reader, rgb_blobs):
    assert rgb_reader.sources == {"thickness": "cnn", "noise": "cnn"}
    assert rgb_reader.heldout_r2["thickness"] > 0.9
    assert rgb_reader.readable("thickness") and rgb_reader.reason("thickness") is None
    # a context no image shows: a held-out R² is measured, but no figure may rest on it
    assert rgb_reader.heldout_r2["noise"] < READABLE_R2
    assert not rgb_reader.readable("noise")
    assert "noise" in rgb_reader.reason("noise") and "R²" in rgb_reader.reason("noise")
    summary = rgb_reader.summary()
    assert summary["noise"]["readable"] is False and summary["thickness"]["source"] == "cnn"
    # read() returns raw units: the radius of the blobs, not a standardised value
    x = rgb_blobs.load_images(np.arange(40))
    got = rgb_reader.read(x)
    assert got.shape == (40, 2)
    assert r2_score(rgb_blobs.attribute("thickness")[:40], got[:, 0]) > 0.8
    assert rgb_reader.record["n_heldout"] == 80 and rgb_reader.record["n_train"] == 320


def test_reader_is_deterministic_for_a_seed():
    data = _blobs(120, seed=1)
    a = fit_reader(data, ["thickness", "intensity"], random_state=3, config=FAST)
    b = fit_reader(data, ["thickness", "intensity"], random_state=3, config=FAST)
    c = fit_reader(data, ["thickness", "intensity"], random_state=4, config=FAST)
    for name, t in a.net.state_dict().items():
        assert torch.equal(t, b.net.state_dict()[name]), name
    assert a.heldout_r2 == b.heldout_r2
    assert a.heldout_r2 != c.heldout_r2


def test_a_context_tied_to_another_is_read_through_it_and_the_reader_says_so():
    base = _blobs(300, seed=2)
    radius = base.attribute("thickness")
    # 'ring' is never drawn: it follows the radius (r > 0.99), as hue follows shape in shapes
    ring = radius + np.random.default_rng(7).normal(0.0, 0.05, len(radius))
    data = ArrayDataset(
        base.images,
        labels=base.labels,
        attributes=np.column_stack([base.attributes, ring]),
        attribute_names=[*base.attribute_names, "ring"],
        source="<tied blobs>",
    )
    reader = fit_reader(data, ["thickness", "noise", "ring"], random_state=0, config=FAST)
    assert reader.record["tied"] == [["thickness", "ring"]]
    assert reader.read_through("ring") == ["thickness"]
    assert reader.read_through("thickness") == ["ring"]
    assert reader.read_through("noise") == []
    assert reader.summary()["ring"]["read_through"] == ["thickness"]  # metrics.json says so
    # the shortcut itself: the reader "reads" ring on held-out images it never sees, from the
    # radius, so a change of the radius alone reads as a change of ring
    assert reader.readable("ring")
    x = data.load_images(np.arange(40))
    got = reader.read(x)
    assert np.corrcoef(got[:, 0], got[:, 2])[0, 1] > 0.9
    # morphometrics measure the image itself: nothing is read through a tied context
    grey = make_dataset(200, size=28, seed=3)
    thick = grey.attribute("thickness")
    tied = ArrayDataset(
        grey.images,
        labels=grey.labels,
        attributes=np.column_stack([thick, 0.1 * thick]),
        attribute_names=["thickness", "intensity"],
        source="<tied grey blobs>",
    )
    morph = fit_reader(tied, ["thickness", "intensity"], random_state=0, config=FAST)
    assert morph.record["tied"] == [["thickness", "intensity"]]
    assert morph.read_through("thickness") == [] and morph.read_through("intensity") == []


def test_morphometric_contexts_use_glance_morphometrics_on_one_channel():
    gray = make_dataset(200, size=28, channels=1, seed=2)
    r = fit_reader(gray, ["intensity"], random_state=0)
    assert r.sources == {"intensity": "morphometrics"} and r.net is None
    assert r.heldout_r2["intensity"] > 0.95 and r.readable("intensity")
    a, _ = r.calibration["intensity"]
    assert a == pytest.approx(1 / 255, rel=0.05)  # the measured intensity is in grey levels
    # the same context in RGB images is read by the CNN
    rgb = fit_reader(_blobs(64, seed=2), ["intensity"], random_state=0, config=FAST)
    assert rgb.sources == {"intensity": "cnn"} and rgb.net is not None


def test_too_few_heldout_values_give_no_figure():
    r = fit_reader(_blobs(30), ["thickness"], random_state=0, config=FAST)
    assert r.heldout_r2["thickness"] is None and not r.readable("thickness")
    assert "held-out" in r.reason("thickness")


def test_a_single_image_gives_a_reader_that_reads_nothing():
    r = fit_reader(_blobs(1), ["thickness", "noise"], random_state=0, config=FAST)
    assert r.net is None and not any(r.readable(c) for c in r.contexts)
    assert np.isnan(r.read(torch.rand(2, 3, 16, 16))).all()


def test_net_works_for_any_channel_count_and_size():
    for channels, size in ((1, 28), (3, 64), (4, 128)):
        net = ContextReaderNet(channels, 5, width=8).eval()
        assert net(torch.rand(2, channels, size, size)).shape == (2, 5)


def test_read_checks_the_channels(rgb_reader):
    with pytest.raises(ShapeError, match="ContextReader.read"):
        rgb_reader.read(torch.rand(2, 1, 16, 16))


def test_r2_score_edge_cases():
    assert r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert r2_score([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # constant truth
    assert r2_score([1.0, np.nan, 3.0], [1.0, 5.0, np.nan]) is None  # one finite pair
    assert r2_score([0.0, 1.0], [1.0, 0.0]) < 0


def test_reader_is_cached_in_the_run_and_refitted_when_the_data_change(tmp_path, monkeypatch):
    run = Run.create(tmp_path / "run", {})
    data = _blobs(80, seed=5)
    first = load_or_fit_reader(data, ["thickness", "intensity"], run=run, config=FAST)
    assert run.sealed(f"{run.readers_dir}/reader.json")
    assert run.sealed(f"{run.readers_dir}/reader.safetensors")
    record = json.loads((run.path / run.readers_dir / "reader.json").read_text())
    assert record["contexts"] == ["thickness", "intensity"] and record["fingerprint"]
    assert record["architecture"]["in_channels"] == 3 and "mean" in record["readers"]["thickness"]
    Run.open(run.path)  # sealed: the manifest verifies

    calls = []
    real_fit = readers.fit_reader
    monkeypatch.setattr(readers, "fit_reader", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    again = load_or_fit_reader(
        data, ["thickness", "intensity"], run=Run.open(run.path), config=FAST
    )
    assert calls == []  # reused
    x = data.load_images(np.arange(8))
    assert np.array_equal(again.read(x), first.read(x))
    assert again.heldout_r2 == first.heldout_r2

    load_or_fit_reader(data, ["intensity"], run=run, config=FAST)  # other contexts
    assert calls == [1]
    changed = _blobs(80, seed=6)
    load_or_fit_reader(changed, ["intensity"], run=run, config=FAST)  # other data
    assert calls == [1, 1]
    record = json.loads((run.path / run.readers_dir / "reader.json").read_text())
    from glance.training.checkpoint import dataset_fingerprint

    assert record["fingerprint"] == dataset_fingerprint(changed)
    load_or_fit_reader(changed, ["intensity"], run=run, config=FAST)
    assert calls == [1, 1]  # and reused again


def test_reader_without_a_run_is_fitted_in_memory(tmp_path):
    r = load_or_fit_reader(_blobs(40), ["thickness"], config=FAST)
    assert isinstance(r, ContextReader) and not list(tmp_path.iterdir())
