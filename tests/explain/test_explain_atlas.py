"""The concept atlas on the analytic toy world, where what every node does is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glance.exceptions import ConfigError
from glance.explain import concept_atlas, toy


@pytest.fixture(scope="module")
def world():
    z = toy.sample_concepts(64, random_state=3)
    images = toy.render(z)
    contexts = {"size": z[:, 0].numpy().copy(), "brightness": z[:, 1].numpy().copy()}
    contexts["brightness"][::5] = np.nan  # unknown for some images
    return images, contexts


def test_the_size_classifier_is_moved_by_size_only(world):
    images, contexts = world
    atlas = concept_atlas(toy.make_twin(toy.SizeClassifier()), images, contexts=contexts)
    assert atlas.nodes[atlas.order[0]] == "size"  # measured importance orders the nodes
    assert atlas.moves_output("size") and not atlas.moves_output("concept_0")
    assert atlas.strongest_context("size")[0] == "size"
    assert atlas.strongest_context("size")[1] > 0.9
    text = atlas.describe("size")
    assert text.startswith("Raising it moves 0 → 1") and "tracks size" in text
    assert atlas.describe("concept_0").startswith("Barely moves the classifier's output")
    assert "unrelated to size and brightness" in atlas.describe("concept_0")
    # raising size turns small squares (class 0) large (class 1): the flip is named
    raise_flips = [f for f in atlas.flips[atlas.index("size")] if f["direction"] == "raise"]
    assert raise_flips and (raise_flips[0]["from"], raise_flips[0]["to"]) == ("0", "1")
    # AttFind: what makes a square large is more size
    top = atlas.class_attributes("1")[0]
    assert (top["node"], top["direction"]) == ("size", "raise") and top["mean_gain"] > 0
    assert top["pairs"].shape[1] == 2  # (factual, moved) image pairs


def test_the_brightness_classifier_sees_size_through_brightness(world):
    images, contexts = world
    atlas = concept_atlas(toy.make_twin(toy.BrightnessClassifier()), images, contexts=contexts)
    # total effects: size moves brightness (the SCM), so both move the output
    assert atlas.moves_output("brightness") and atlas.moves_output("size")
    assert not atlas.moves_output("concept_0")


def test_order_follows_the_given_importance_and_strips_are_shared(world):
    images, contexts = world
    twin = toy.make_twin(toy.SizeClassifier())
    atlas = concept_atlas(
        twin, images, contexts=contexts, importance={"concept_0": 3.0, "size": 2.0}, n_strip=4
    )
    assert [atlas.nodes[j] for j in atlas.order] == ["concept_0", "size", "brightness"]
    assert atlas.importance_source == "scm"
    assert atlas.strips.shape == (3, 4, 5, 1, 16, 16)
    # the delta-0 column is the same reconstruction for every node
    assert np.array_equal(atlas.strips[0, :, 2], atlas.strips[1, :, 2])


def test_save_writes_json_and_pictures(world, tmp_path):
    images, contexts = world
    atlas = concept_atlas(toy.make_twin(toy.SizeClassifier()), images, contexts=contexts)
    path = atlas.save(tmp_path / "atlas")
    d = json.loads(path.read_text())
    assert [e["node"] for e in d["nodes"]] == [atlas.nodes[j] for j in atlas.order]
    for e in d["nodes"]:
        assert (tmp_path / "atlas" / e["strip"]).read_bytes().startswith(b"\x89PNG")
        assert e["description"].endswith(".")
    for found in d["class_attributes"].values():
        for a in found:
            assert (tmp_path / "atlas" / a["pairs"]).is_file()


def test_bad_input_is_refused(world):
    images, _ = world
    with pytest.raises(ConfigError, match="0 among the deltas"):
        concept_atlas(toy.make_twin(toy.SizeClassifier()), images, deltas=(-1.0, 1.0))
    atlas = concept_atlas(toy.make_twin(toy.SizeClassifier()), images)
    with pytest.raises(ConfigError, match="unknown node"):
        atlas.describe("colour")
    assert atlas.contexts == [] and "unrelated" not in atlas.describe("size")
