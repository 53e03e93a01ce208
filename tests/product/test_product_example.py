"""examples/own_model.py: argument parsing, --dry-run and the dataset it makes on disk."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_model.py"


def _module():
    spec = importlib.util.spec_from_file_location("own_model_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_prints_the_plan(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(tmp_path / "x"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("1. make 800 images")
    assert "report.html" in lines[-1]
    assert not (tmp_path / "x").exists()  # a dry run writes nothing


def test_bad_arguments_exit_non_zero(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(tmp_path), "--n-images", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "--n-images must be at least 50" in out.stderr


def test_made_dataset_loads_as_an_image_folder(tmp_path: Path) -> None:
    from glance.data import ImageFolderDataset

    _module().make_dataset(tmp_path / "d", n_images=60, seed=1)
    ds = ImageFolderDataset(tmp_path / "d" / "images", tmp_path / "d" / "attributes.csv")
    assert len(ds) == 60 and ds.image_shape == (3, 32, 32)
    assert ds.attribute_names == ["size", "brightness"]
    size, bright = ds.attribute("size"), ds.attribute("brightness")
    assert np.isnan(bright).any() and not np.isnan(size).any()  # brightness partly unknown
    known = ~np.isnan(bright)
    assert np.corrcoef(size[known], bright[known])[0, 1] > 0.5  # size causes brightness
    assert set(ds.labels.tolist()) == {0, 1}
    assert (ds.labels == (size > np.median(size))).all()


def test_model_takes_unit_range_images() -> None:
    import torch

    model = _module().make_model(2).eval()
    assert model.input_size == (32, 32) and model.in_channels == 3
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 2)
