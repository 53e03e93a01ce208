"""Known-behaviour recipes: train on a directory, evaluate every held-out split, save."""

from __future__ import annotations

import pytest

from glance.classifiers import RECIPES, load_classifier, train_recipe
from glance.data.shapes import generate_shapes
from glance.exceptions import DataValidationError, UnknownNameError


@pytest.fixture(scope="module")
def spurious_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "spurious"
    generate_shapes(out, n=200, size=32, variant="spurious", seed=0, n_jobs=1)
    return out


def test_recipes_are_registered():
    assert {"morpho-digits", "morpho-thickness", "shapes-plain", "shapes-spurious"} <= set(
        RECIPES.names()
    )
    assert RECIPES.get("morpho-thickness").target == "thickness:median"


def test_spurious_recipe_reports_both_test_splits_and_saves(spurious_dir, tmp_path):
    out = tmp_path / "spurious.safetensors"
    model, report = train_recipe("shapes-spurious", spurious_dir, out=out, epochs=2)
    acc = report["accuracy"]
    assert set(acc) == {"test", "test_reversed"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    assert report["cue_reliance"] == pytest.approx(acc["test"] - acc["test_reversed"])
    loaded = load_classifier(out)
    assert loaded.meta["evaluation"]["recipe"] == "shapes-spurious"
    assert loaded.in_channels == 3 and loaded.input_size == (32, 32)


def test_recipe_errors(spurious_dir, tmp_path):
    with pytest.raises(UnknownNameError, match="shapes-plain"):
        train_recipe("shapes-plane", spurious_dir)
    with pytest.raises(DataValidationError, match="'train' split"):
        train_recipe("shapes-plain", spurious_dir / "test")
