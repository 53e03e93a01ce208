"""The pendulum generator: angles -> shadow -> label, and images that show their shadow."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from glance._io import sha256_file, verify_manifest
from glance.cli.main import main
from glance.data import list_splits, load_dataset, test_split
from glance.data.pendulum import (
    LIGHT_RANGE,
    PENDULUM_FACTORS,
    PENDULUM_RANGE,
    SHADOW_THRESHOLD,
    generate_pendulum,
    pendulum_descendants,
    render_pendulum,
    sample_pendulum_factors,
)
from glance.exceptions import DataValidationError

EDGES = {
    ("pendulum_angle", "shadow_length"),
    ("light_angle", "shadow_length"),
    ("pendulum_angle", "shadow_position"),
    ("light_angle", "shadow_position"),
    ("shadow_length", "label"),
}


def _hashes(path):
    return {p.relative_to(path).as_posix(): sha256_file(p) for p in path.rglob("*") if p.is_file()}


def _measure_shadow(image):
    """(length, position) of the dark run on one row inside the shadow band, from the pixels.

    The row's brightest pixel is bare ground and its darkest full shadow (a shadow is at least
    8 px long at 64 px and never covers the whole row); anti-aliased end pixels count by share.
    """
    size = image.shape[0]
    row = image[int(0.865 * size), :, 0].astype(np.float64)  # the band is y in [0.11, 0.16]
    dark = (row.max() - row) / (row.max() - row.min())
    centre = ((np.arange(size) + 0.5) * dark).sum() / dark.sum() / size
    return dark.sum() / size, 2.0 * centre - 1.0


def _grid_median(k=400):
    t = PENDULUM_RANGE[0] + (np.arange(k) + 0.5) / k * (PENDULUM_RANGE[1] - PENDULUM_RANGE[0])
    p = LIGHT_RANGE[0] + (np.arange(k) + 0.5) / k * (LIGHT_RANGE[1] - LIGHT_RANGE[0])
    return np.median(pendulum_descendants(t[:, None], p[None, :])["shadow_length"])


def _scene(pendulum_angle, light_angle, size=64):
    row = {"pendulum_angle": pendulum_angle, "light_angle": light_angle}
    row.update(pendulum_descendants(**row))
    return row, render_pendulum(row, size)


def test_pendulum_layout_truth_and_rule(tmp_path):
    out = generate_pendulum(tmp_path / "p", n=50, seed=1, n_jobs=1)
    verify_manifest(out)
    truth = json.loads((out / "truth.json").read_text())
    assert list_splits(out) == ["train", "test"] and test_split(out) == "test"
    assert truth["generator"] == "glance.data.pendulum" and truth["image_size"] == 64
    assert truth["factors"] == list(PENDULUM_FACTORS) and truth["nodes"][-1] == "label"
    assert {(e["source"], e["target"]) for e in truth["edges"]} == EDGES
    assert truth["roots"] == ["pendulum_angle", "light_angle"]
    assert truth["label_rule"]["factors"] == ["shadow_length"]
    assert str(SHADOW_THRESHOLD) in truth["label_rule"]["expression"]
    assert set(truth["descriptions"]) == set(PENDULUM_FACTORS)
    train = load_dataset(out, "train")
    assert len(train) == 40 and train.image_shape == (3, 64, 64)
    assert train.attribute_names == truth["factors"]
    np.testing.assert_array_equal(
        train.labels, train.attribute("shadow_length") >= SHADOW_THRESHOLD
    )


def test_pendulum_deterministic_per_seed_and_worker_count(tmp_path):
    a = generate_pendulum(tmp_path / "a", n=10, seed=9, n_jobs=1)
    b = generate_pendulum(tmp_path / "b", n=10, seed=9, n_jobs=2, chunk_size=3)
    c = generate_pendulum(tmp_path / "c", n=10, seed=10, n_jobs=1)
    assert _hashes(a) == _hashes(b)
    assert _hashes(a)["train/factors.csv"] != _hashes(c)["train/factors.csv"]


def test_pendulum_factor_ranges_balance_and_mediation():
    f = sample_pendulum_factors(20_000, np.random.default_rng(0))
    assert (
        PENDULUM_RANGE[0] <= f["pendulum_angle"].min()
        and f["pendulum_angle"].max() <= PENDULUM_RANGE[1]
    )
    assert LIGHT_RANGE[0] <= f["light_angle"].min() and f["light_angle"].max() <= LIGHT_RANGE[1]
    # The whole shadow lies on the visible ground line.
    lo = (f["shadow_position"] + 1) / 2 - f["shadow_length"] / 2
    hi = (f["shadow_position"] + 1) / 2 + f["shadow_length"] / 2
    assert lo.min() > 0.05 and hi.max() < 0.97 and f["shadow_length"].min() > 0.1
    # The threshold is the median of shadow_length: balanced classes.
    assert _grid_median() == pytest.approx(SHADOW_THRESHOLD, abs=5e-4)
    assert 0.48 < f["label"].mean() < 0.52
    # The label is a function of shadow_length alone; both angles move it through the shadow.
    np.testing.assert_array_equal(f["label"], f["shadow_length"] >= SHADOW_THRESHOLD)
    assert np.corrcoef(np.abs(f["pendulum_angle"]), f["shadow_length"])[0, 1] > 0.3
    assert np.corrcoef(np.abs(f["light_angle"] - 90), f["shadow_length"])[0, 1] > 0.3
    assert np.corrcoef(f["light_angle"], f["shadow_position"])[0, 1] > 0.5
    assert np.corrcoef(f["pendulum_angle"], f["shadow_position"])[0, 1] > 0.5


def test_pendulum_images_show_their_shadow(tmp_path):
    out = generate_pendulum(tmp_path / "p", n=60, seed=2, n_jobs=1)
    ds = load_dataset(out, "train")
    imgs = (ds.load_images().numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    measured = np.array([_measure_shadow(img) for img in imgs])
    length, position = ds.attribute("shadow_length"), ds.attribute("shadow_position")
    assert np.corrcoef(measured[:, 0], length)[0, 1] > 0.99
    assert np.corrcoef(measured[:, 1], position)[0, 1] > 0.99
    np.testing.assert_allclose(measured[:, 0], length, atol=1.5 / 64)
    np.testing.assert_allclose(measured[:, 1], position, atol=1.5 / 64)


@pytest.mark.parametrize(
    ("base", "intervened"),
    [((10.0, 70.0), (10.0, 125.0)), ((-35.0, 95.0), (30.0, 95.0))],
    ids=["light_angle", "pendulum_angle"],
)
def test_intervening_on_an_angle_moves_the_shadow(base, intervened):
    f0, img0 = _scene(*base)
    f1, img1 = _scene(*intervened)
    moved = np.subtract(_measure_shadow(img1), _measure_shadow(img0))
    np.testing.assert_allclose(
        moved,
        [f1["shadow_length"] - f0["shadow_length"], f1["shadow_position"] - f0["shadow_position"]],
        atol=2 / 64,
    )
    assert np.abs(moved).max() > 0.1
    assert f1["label"] == int(f1["shadow_length"] >= SHADOW_THRESHOLD)


def test_intervening_on_the_shadow_alone_changes_only_the_ground():
    f0, img0 = _scene(5.0, 100.0)
    longer = dict(f0, shadow_length=0.5)
    img1 = render_pendulum(longer, 64)
    changed = np.nonzero((img0 != img1).any(axis=(1, 2)))[0]
    assert changed.size and changed.min() >= int((1 - 0.16) * 64)  # rows on the ground only
    assert _measure_shadow(img1)[0] == pytest.approx(0.5, abs=1.5 / 64)


def test_size_128_and_bad_parameters(tmp_path):
    f, img = _scene(-20.0, 120.0, size=128)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    np.testing.assert_allclose(
        _measure_shadow(img), (f["shadow_length"], f["shadow_position"]), atol=1.5 / 128
    )
    with pytest.raises(DataValidationError, match="size must be 64 or 128"):
        generate_pendulum(tmp_path / "x", n=4, size=32)
    with pytest.raises(DataValidationError, match="n must be"):
        generate_pendulum(tmp_path / "x", n=1)
    with pytest.raises(DataValidationError, match=r"pendulum_angle .* \[-40, 44\]"):
        pendulum_descendants(60.0, 90.0)
    with pytest.raises(DataValidationError, match="light_angle"):
        pendulum_descendants(0.0, [90.0, 20.0])
    assert not (tmp_path / "x").exists()


def test_pendulum_cli(tmp_path, capsys):
    out = tmp_path / "p"
    argv = ["-q", "data", "pendulum", "--out", str(out), "--n", "6", "--jobs", "1"]
    assert main([*argv, "--size", "128", "--seed", "3"]) == 0
    assert json.loads((out / "truth.json").read_text())["image_size"] == 128
    with Image.open(out / "test" / "images" / "000000.png") as img:
        assert img.size == (128, 128) and img.mode == "RGB"
    assert main(argv) == 2  # a dataset is there already and --force is missing
    assert "pass --force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    for bad in (["--size", "32"], ["--n", "1"], ["--seed", "-1"]):
        assert main(["data", "pendulum", "--out", str(tmp_path / "x"), *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("glance: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
