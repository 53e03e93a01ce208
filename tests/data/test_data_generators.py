"""The causal Morpho-MNIST and causal-shapes generators."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from glance._io import sha256_file, verify_manifest
from glance.data import list_splits, load_dataset, load_morphomnist, test_split
from glance.data import morpho_generate as mg
from glance.data.morpho_generate import generate_morphomnist, sample_morpho_factors
from glance.data.morphometrics import measure
from glance.data.shapes import SIZE_THRESHOLD, generate_shapes, sample_shape_factors
from glance.exceptions import DataValidationError


def _hashes(path):
    return {p.relative_to(path).as_posix(): sha256_file(p) for p in path.rglob("*") if p.is_file()}


def test_morpho_mnist_layout_split_and_targets(tmp_path):
    out = generate_morphomnist(tmp_path / "mm", n=40, seed=3, slant=True, n_jobs=1)
    assert list_splits(out) == ["train", "t10k"] and test_split(out) == "t10k"
    verify_manifest(out)
    train, test = load_morphomnist(out, "train"), load_morphomnist(out, "t10k")
    assert (len(train), len(test)) == (36, 4)
    assert train.attribute_names == ["thickness", "intensity", "slant"]
    m = measure(train.images[:, 0], n_jobs=1)
    for name, tol in (("thickness", 0.2), ("intensity", 2.0), ("slant", 0.1)):
        assert np.median(np.abs(m[name] - train.attribute(name))) < tol, name
    assert json.loads((out / "generation.json").read_text())["seed"] == 3


def test_morpho_mnist_is_deterministic_per_seed(tmp_path):
    a = generate_morphomnist(tmp_path / "a", n=12, seed=5, n_jobs=1)
    b = generate_morphomnist(tmp_path / "b", n=12, seed=5, n_jobs=1)
    c = generate_morphomnist(tmp_path / "c", n=12, seed=6, n_jobs=1)
    d = generate_morphomnist(tmp_path / "d", n=12, seed=5, n_jobs=2, chunk_size=3)
    assert _hashes(a) == _hashes(b) == _hashes(d)
    assert _hashes(a)["train-morpho.csv"] != _hashes(c)["train-morpho.csv"]


def test_morpho_distribution_dependent_and_independent():
    dep = sample_morpho_factors(20_000, np.random.default_rng(0))
    ind = sample_morpho_factors(20_000, np.random.default_rng(1), independent=True)
    t = dep["thickness"]
    assert t.min() > 0.5 and np.mean(t) == pytest.approx(2.5, abs=0.02)
    assert np.var(t) == pytest.approx(10 / 25, rel=0.05)  # Gamma(10, rate 5): variance 0.4
    assert stats.spearmanr(t, dep["intensity"])[0] > 0.7
    assert abs(stats.spearmanr(ind["thickness"], ind["intensity"])[0]) < 0.03
    # Same marginal intensity distribution either way.
    assert stats.ks_2samp(dep["intensity"], ind["intensity"]).pvalue > 0.01
    assert 64 < ind["intensity"].min() and ind["intensity"].max() < 255


def test_failed_generation_leaves_no_partial_output(tmp_path, monkeypatch):
    out = tmp_path / "mm"
    generate_morphomnist(out, n=4, seed=0, n_jobs=1)
    before = _hashes(out)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mg, "save_morphomnist_split", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_morphomnist(out, n=4, seed=1, n_jobs=1, force=True)
    assert _hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mm"]


def test_generators_reject_bad_parameters(tmp_path):
    with pytest.raises(DataValidationError, match="n must be"):
        generate_morphomnist(tmp_path / "x", n=1)
    with pytest.raises(DataValidationError, match="seed"):
        generate_morphomnist(tmp_path / "x", n=4, seed=-1)
    with pytest.raises(DataValidationError, match="size must be 32 or 64"):
        generate_shapes(tmp_path / "x", n=4, size=48)
    with pytest.raises(DataValidationError, match="variant"):
        generate_shapes(tmp_path / "x", n=4, variant="fancy")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_shapes_plain_layout_truth_and_rule(tmp_path):
    out = generate_shapes(tmp_path / "s", n=50, size=32, seed=1, n_jobs=1)
    verify_manifest(out)
    truth = json.loads((out / "truth.json").read_text())
    assert list_splits(out) == ["train", "test"] and test_split(out) == "test"
    assert truth["label_rule"]["factors"] == ["size"] and truth["spurious"] is None
    edges = {(e["source"], e["target"]) for e in truth["edges"]}
    assert {("shape", "hue"), ("pos_y", "brightness"), ("size", "label")} == edges
    assert len(truth["factors"]) >= 6
    train = load_dataset(out, "train")
    assert len(train) == 40 and train.image_shape == (3, 32, 32)
    assert train.attribute_names == truth["factors"]
    np.testing.assert_array_equal(train.labels, train.attribute("size") >= SIZE_THRESHOLD)
    assert set(np.unique(train.attribute("shape"))) <= {0, 1, 2}


def test_shapes_images_show_their_factors(tmp_path):
    out = generate_shapes(tmp_path / "s", n=60, size=64, seed=2, n_jobs=1)
    ds = load_dataset(out, "train")
    imgs = ds.load_images().numpy()
    # The object lies inside its circumcircle, inside the frame: the corners show background.
    background = imgs[:, :, :1, :1]
    np.testing.assert_allclose(background[:, 0, 0, 0], ds.attribute("background"), atol=0.5 / 255)
    # Object pixels differ from the (grey) background; their share of the image is the area of
    # a circle of diameter size, whatever the shape (size is the area-equivalent diameter).
    diff = np.abs(imgs - background).max(axis=1)
    obj = diff > 0.1
    # Edge pixels are anti-aliased: their contrast is the share of the pixel the object covers.
    area = (diff / diff.max(axis=(1, 2), keepdims=True)).mean(axis=(1, 2))
    expected = np.pi * (ds.attribute("size") / 2) ** 2
    np.testing.assert_allclose(area, expected, rtol=0.05)
    # Object centre follows pos_x; object brightness (HSV value) follows the factor.
    cols = np.array([np.nonzero(o.any(axis=0))[0].mean() for o in obj])
    assert np.corrcoef(cols, ds.attribute("pos_x"))[0, 1] > 0.9
    value = np.array([imgs[k][:, obj[k]].max(axis=0).mean() for k in range(len(ds))])
    assert np.corrcoef(value, ds.attribute("brightness"))[0, 1] > 0.9


def test_shapes_factor_independence_and_causal_edges():
    f = sample_shape_factors(20_000, np.random.default_rng(0))
    for name in ("shape", "pos_x", "pos_y", "rotation", "background", "hue", "brightness"):
        assert abs(np.corrcoef(f[name], f["label"])[0, 1]) < 0.03, name
    assert np.corrcoef(f["shape"], f["hue"])[0, 1] > 0.9
    assert np.corrcoef(f["pos_y"], f["brightness"])[0, 1] < -0.7
    assert abs(np.corrcoef(f["size"], f["brightness"])[0, 1]) < 0.03
    assert 0.4 < f["label"].mean() < 0.6


def test_shapes_spurious_cue_agrees_in_train_and_reverses(tmp_path):
    out = generate_shapes(tmp_path / "s", n=400, variant="spurious", seed=4, n_jobs=1)
    truth = json.loads((out / "truth.json").read_text())
    assert truth["spurious"]["factor"] == "cue" and ("label", "cue") in {
        (e["source"], e["target"]) for e in truth["edges"]
    }
    assert list_splits(out) == ["train", "test", "test_reversed"]
    train, test, rev = (load_dataset(out, s) for s in ("train", "test", "test_reversed"))
    assert np.mean(train.attribute("cue") == train.labels) > 0.9
    assert np.mean(test.attribute("cue") == test.labels) > 0.85
    np.testing.assert_array_equal(rev.attribute("cue"), 1 - test.attribute("cue"))
    np.testing.assert_array_equal(rev.attribute("size"), test.attribute("size"))
    # The marker is visible: the top-left corner is white exactly when cue = 1.
    corner = test.load_images().numpy()[:, :, 2, 2].min(axis=1)
    np.testing.assert_array_equal(corner > 0.99, test.attribute("cue") == 1)


def test_shapes_deterministic_per_seed(tmp_path):
    a = generate_shapes(tmp_path / "a", n=10, seed=9, n_jobs=1)
    b = generate_shapes(tmp_path / "b", n=10, seed=9, n_jobs=1)
    assert _hashes(a) == _hashes(b)


def test_generators_refuse_to_replace_foreign_directories(tmp_path):
    user = tmp_path / "documents"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(DataValidationError, match="refusing to replace"):
        generate_morphomnist(user, n=4, n_jobs=1)
    with pytest.raises(DataValidationError, match="refusing to replace"):
        generate_shapes(user, n=4, n_jobs=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataValidationError, match="not a directory"):
        generate_shapes(tmp_path / "file", n=4, n_jobs=1)
    assert (user / "thesis.tex").read_text() == "precious"
    # An empty folder is fine; a previous output of the same generator is replaced only with
    # force (never silently: 10,000 digits must not become 100 without a word).
    (tmp_path / "empty").mkdir()
    generate_shapes(tmp_path / "empty", n=4, n_jobs=1)
    with pytest.raises(DataValidationError, match="already exists there; pass --force"):
        generate_shapes(tmp_path / "empty", n=6, n_jobs=1)
    assert len(load_dataset(tmp_path / "empty", "train")) == 3  # still the first dataset
    generate_shapes(tmp_path / "empty", n=6, n_jobs=1, force=True)
    assert len(load_dataset(tmp_path / "empty", "train")) == 5
    with pytest.raises(DataValidationError, match="refusing to replace"):
        generate_morphomnist(tmp_path / "empty", n=4, n_jobs=1)
