"""Periodic contexts as derived columns sin(COLUMN/PERIOD) and cos(COLUMN/PERIOD)."""

from __future__ import annotations

import numpy as np
import pytest

from glance.data import ArrayDataset
from glance.data.base import periodic_column
from glance.exceptions import DataValidationError
from helpers import TinyCNN, make_dataset, torch_threads


def _with_angle(n: int = 64, seed: int = 0) -> ArrayDataset:
    base = make_dataset(n, seed=seed)
    angle = np.random.default_rng(seed).uniform(0, 360, n)
    angle[::9] = np.nan  # weak supervision survives the derivation
    return ArrayDataset(
        base._load_uint8(np.arange(n)),
        labels=base.labels,
        attributes=np.column_stack([base.attributes, angle]),
        attribute_names=[*base.attribute_names, "angle"],
        source="<blobs with angle>",
    )


def test_derived_columns_are_sine_and_cosine_of_the_phase():
    ds = _with_angle()
    raw = ds.attribute("angle")
    np.testing.assert_allclose(ds.attribute("sin(angle/360)"), np.sin(np.deg2rad(raw)))
    np.testing.assert_allclose(ds.attribute("cos(angle/360)"), np.cos(np.deg2rad(raw)))
    assert np.isnan(ds.attribute("sin(angle/360)")[::9]).all()
    assert ds.has_attribute("cos(angle/360)") and not ds.has_attribute("cos(nope/360)")


def test_359_degrees_is_next_to_0_degrees():
    ds = ArrayDataset(
        np.zeros((2, 1, 4, 4), np.uint8),
        labels=np.array([0, 1]),
        attributes=np.array([[0.0], [359.0]]),
        attribute_names=["angle"],
    )
    s, c = ds.attribute("sin(angle/360)"), ds.attribute("cos(angle/360)")
    assert np.hypot(s[1] - s[0], c[1] - c[0]) < 0.02


@pytest.mark.parametrize(
    "name,parsed",
    [
        ("sin(rotation/360)", ("sin", "rotation", 360.0)),
        ("cos(hour of day/24)", ("cos", "hour of day", 24.0)),
        ("cos(t/6.2831853)", ("cos", "t", 6.2831853)),
        ("sin(rotation/0)", None),
        ("tan(rotation/360)", None),
        ("rotation", None),
    ],
)
def test_names_parse(name, parsed):
    assert periodic_column(name) == parsed


def test_unknown_column_names_the_syntax():
    with pytest.raises(DataValidationError, match=r"sin\(COLUMN/PERIOD\)"):
        _with_angle().attribute("sin(missing/360)")


def test_a_fit_explains_and_describes_a_periodic_context(tmp_path):
    from glance.estimator import Glance
    from glance.explain import explain

    ds = _with_angle(96)
    names = ("thickness", "sin(angle/360)", "cos(angle/360)")
    with torch_threads(1):
        est = Glance(TinyCNN(n_classes=3), contexts=names, preset="tiny", quiet=True)
        est.fit(ds, out=tmp_path / "run")
        assert est.context_names_ == list(names)
        metrics = est.evaluate(ds, out=tmp_path / "run")
        assert set(names) <= set(metrics["alignment_r2"])
        graph = est.global_explanation(ds, n_resamples=0)
        assert set(names) <= set(graph.names)
        exp = explain(est, ds.load_images([0, 1]))
        assert set(names) <= set(exp.nodes)
        atlas = est.describe_concepts(ds, n_images=8)
        assert atlas.strongest_context("sin(angle/360)") is not None
